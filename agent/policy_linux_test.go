package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/policy/nft"
	"github.com/flatnet-io/flatnet/test/harness"
)

// TestPrivilegedPolicy runs an agent with policy.enabled on a real
// kube-apiserver, under the deploy RBAC, its nftables table in a namespace
// of its own: an Allocate (the CNI ADD's) answers only once the pod's rules
// are in the kernel; policy objects change them live; a Release takes them
// away; a restart keeps the table; policy turned off removes it.
func TestPrivilegedPolicy(t *testing.T) {
	harness.Require(t, "ip", "nft")
	netns := harness.NewNetNS(t, "agent")
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	k.MustKubectl(t, "apply", "-f", writeNode(t, "node1"))
	apply(t, k, `apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec:
  nodeName: node1
  containers:
  - {name: c, image: pause, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`)
	cfg := kubeAgentConfig(t, k)
	cfg.Policy.Enabled = true
	log, logs := logTo(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, env{netns: netns.NetNS}, log) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent stopped with: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	waitForSocket(t, cfg.API.Socket, done)
	c, err := agentclient.Dial(cfg.API.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := ipampb.NewIPAMClient(c.Conn())

	veth := policy.VethOf("c1/eth0")
	chain := func(dir string) (string, bool) {
		out, err := netns.Exec("nft", "list", "chain", "inet", nft.TableName, dir+"-"+veth)
		return out, err == nil
	}
	// The CNI ADD: when Allocate answers, the pod's ingress chain is there.
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	if _, err := client.Allocate(actx, &ipampb.AllocateRequest{Handle: "c1/eth0", Attrs: &ipampb.Attributes{Namespace: "x", Pod: "a"}}); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if out, ok := chain("ingress"); !ok || !strings.Contains(out, "drop") {
		t.Fatalf("after Allocate, no ingress chain with a drop for the pod:\n%s", out)
	}
	if _, ok := chain("egress"); ok {
		t.Error("an egress chain for a pod whose egress no policy isolates")
	}

	// A policy object allowing namespace other on the named port: the chain follows.
	apply(t, k, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}}]
    ports: [{port: http}]
`)
	eventually(t, "the allow rule", func() bool {
		out, _ := chain("ingress")
		return strings.Contains(out, "th dport 8080") || strings.Contains(out, "tcp dport 8080")
	})

	// flatnetctl policy shows it, run on the node (its namespace).
	out := netns.MustExec(t, harness.Bin("flatnetctl"), "--socket", cfg.API.Socket, "policy", "x/a")
	for _, want := range []string{"veth " + veth, "ingress: isolated", "x/allow-y ingress[0]", "counter packets", "egress: not isolated"} {
		if !strings.Contains(out, want) {
			t.Errorf("flatnetctl policy x/a lacks %q:\n%s", want, out)
		}
	}

	// A restart keeps the table and rewrites nothing.
	before := netns.MustExec(t, "nft", "-a", "list", "table", "inet", nft.TableName)
	stop()
	if got := netns.MustExec(t, "nft", "-a", "list", "table", "inet", nft.TableName); got != before {
		t.Errorf("the table changed when the agent stopped:\n%s\nwas\n%s", got, before)
	}
	conn2 := startAgent(t, cfg, env{netns: netns.NetNS}, log)
	client = ipampb.NewIPAMClient(conn2)
	eventually(t, "the restarted agent's first ruleset", func() bool {
		return strings.Count(logs.String(), "network policy enforced") == 2
	})
	time.Sleep(100 * time.Millisecond) // and its first pass done
	if got := netns.MustExec(t, "nft", "-a", "list", "table", "inet", nft.TableName); !sameRules(got, before) {
		t.Errorf("the restarted agent rewrote the table:\n%s\nwas\n%s", got, before)
	}

	// The CNI DEL: the pod's chain goes.
	if _, err := client.Release(context.Background(), &ipampb.ReleaseRequest{Handle: "c1/eth0"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the chain gone", func() bool { _, ok := chain("ingress"); return !ok })
}

// TestPrivilegedPolicyOffRemovesTheTable: an agent with policy off deletes
// the table an earlier run left, and touches no other.
func TestPrivilegedPolicyOffRemovesTheTable(t *testing.T) {
	harness.Require(t, "ip", "nft")
	netns := harness.NewNetNS(t, "agent")
	netns.MustExec(t, "nft", "add", "table", "inet", nft.TableName)
	netns.MustExec(t, "nft", "add", "table", "inet", "other")
	cfg := testConfig(t)
	log, logs := logTo(t)
	startAgent(t, cfg, env{netns: netns.NetNS}, log)
	// The socket accepts before the agent is done starting: wait for it.
	eventually(t, "the agent ready", func() bool { return strings.Contains(logs.String(), "agent ready") })
	tables := netns.MustExec(t, "nft", "list", "tables")
	if strings.Contains(tables, nft.TableName) || !strings.Contains(tables, "inet other") {
		t.Errorf("tables after an agent with policy off: %q", tables)
	}
	if !strings.Contains(logs.String(), "removed the table") {
		t.Errorf("no log of the removal")
	}
}

// sameRules compares two listings with counters blanked.
func sameRules(a, b string) bool {
	norm := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			f := strings.Fields(l)
			for i := range f {
				if i > 0 && (f[i-1] == "packets" || f[i-1] == "bytes") {
					f[i] = "N"
				}
			}
			out = append(out, strings.Join(f, " "))
		}
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

// TestPrivilegedPolicyPodUnderDenyAll wires pods with the CNI plugin (through
// libcni, as a runtime does) on a node whose agent enforces policy: a pod
// created in a namespace under deny-all is never reached, from before its
// ADD until after it, by a prober knocking on every address of the node's
// block; a policy that allows the prober's namespace then lets it in.
func TestPrivilegedPolicyPodUnderDenyAll(t *testing.T) {
	harness.Require(t, "ip", "nft")
	node := harness.NewNetNS(t, "node")
	node.MustExec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	k.MustKubectl(t, "apply", "-f", writeNode(t, "node1"))
	apply(t, k, `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {nodeName: node1, containers: [{name: c, image: pause}]}
---
apiVersion: v1
kind: Pod
metadata: {name: prober, namespace: other}
spec: {nodeName: node1, containers: [{name: c, image: pause}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
`)
	cfg := kubeAgentConfig(t, k)
	cfg.Policy.Enabled = true
	cfg.IPAM.Pools = []config.Pool{{Name: "v4", CIDR: netip.MustParsePrefix("10.244.0.0/24"), BlockSize: 26}}
	log, _ := logTo(t)
	startAgent(t, cfg, env{netns: node.NetNS}, log)
	rt := harness.NewRuntime(t, node, fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "flatnet", "plugins": [{"type": "flatnet", "agentSocket": %q}]}`, cfg.API.Socket))
	pod := func(ns, name string) *harness.Pod {
		p := harness.NewPod(t, name)
		p.Labels = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name}}
		return p
	}
	prober := pod("other", "prober")
	if _, err := rt.Add(prober); err != nil {
		t.Fatalf("ADD prober: %v", err)
	}
	// a serves before it is wired, and counts what reaches it.
	a := pod("x", "a")
	lis := a.Listen(t, "0.0.0.0:8080")
	var reached atomic.Int64
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			reached.Add(1)
			c.Close()
		}
	}()
	// The prober knocks on every address of the block, all the time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var knocks atomic.Int64
	for i := range 64 {
		wg.Go(func() {
			dst := netip.AddrFrom4([4]byte{10, 244, 0, byte(i)})
			for {
				select {
				case <-stop:
					return
				default:
				}
				knocks.Add(1)
				_ = prober.Do(func(ns.NetNS) error {
					if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 8080).String(), 50*time.Millisecond); err == nil {
						c.Close()
					}
					return nil
				})
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(200 * time.Millisecond)
	if _, err := rt.Add(a); err != nil {
		t.Fatalf("ADD a: %v", err)
	}
	time.Sleep(time.Second)
	if n := reached.Load(); n != 0 {
		t.Fatalf("the pod under deny-all was reached %d times (%d knocks)", n, knocks.Load())
	}
	apply(t, k, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-other, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}}]}]
`)
	eventually(t, "the prober let in", func() bool { return reached.Load() > 0 })
	t.Logf("%d knocks", knocks.Load())
}
