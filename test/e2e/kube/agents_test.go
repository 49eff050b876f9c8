package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
	"github.com/flatnet-io/flatnet/test/harness"
)

// cluster is an API server with flatnet's CRDs and RBAC, a Node object per
// node, and a kubeconfig with the agents' ServiceAccount token.
type cluster struct {
	*harness.Kube
	kubeconfig string
}

func setup(t *testing.T, nodes ...string) *cluster {
	t.Helper()
	for _, b := range []string{"flatnet-agent"} {
		if _, err := os.Stat(harness.Bin(b)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s: %v (make build)", b, err)
			}
			t.Skipf("%s: %v (make build)", b, err)
		}
	}
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	k.MustKubectl(t, "apply", "-f", filepath.Join(harness.Root(), "deploy", "rbac.yaml"))
	for _, n := range nodes {
		if err := k.Apply(fmt.Appendf(nil, "apiVersion: v1\nkind: Node\nmetadata: {name: %s}\n", n)); err != nil {
			t.Fatal(err)
		}
	}
	return &cluster{Kube: k, kubeconfig: k.KubeconfigForToken(t, k.ServiceAccountToken(t, "kube-system", "flatnet"))}
}

// pools are small blocks (/28) of a /20, so that 300 allocations make the
// agents claim about 20 blocks between them, racing for each.
var pools = []harness.Pool{{Name: "pods", CIDR: "10.60.0.0/20", BlockSize: 28}}

func (c *cluster) agent(t *testing.T, node string) *harness.Agent {
	return harness.StartAgent(t, nil, harness.AgentConfig{Node: node, Pools: pools, Kubeconfig: c.kubeconfig})
}

// run is one agent's share of the load: n concurrent Allocate calls over its
// socket, as n CNI ADDs at once would make.
type run struct {
	node  string // the agent's
	round string // starts every handle
	mu    sync.Mutex
	acked map[string]netip.Addr // handle → address, once the agent answered
	errs  []error
	ack   chan struct{} // one per answer
	done  chan struct{}
}

func allocate(t *testing.T, a *harness.Agent, node, round string, n int) *run {
	c, err := agentclient.Dial(a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	client := c.IPAM
	r := &run{node: node, round: round, acked: map[string]netip.Addr{}, ack: make(chan struct{}, n), done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			h := fmt.Sprintf("%s-%s-%03d/eth0", node, round, i)
			resp, err := client.Allocate(ctx, &ipampb.AllocateRequest{Handle: h})
			r.mu.Lock()
			defer r.mu.Unlock()
			if err != nil {
				r.errs = append(r.errs, fmt.Errorf("%s: %w", h, err))
				return
			}
			r.acked[h] = netip.MustParsePrefix(resp.GetAddresses()[0].GetAddress()).Addr()
			r.ack <- struct{}{}
		})
	}
	go func() { wg.Wait(); close(r.done) }()
	return r
}

// requests counts the API server's answers about IPAMBlocks by verb and code,
// from its own metrics.
func (c *cluster) requests(t *testing.T) map[string]int {
	t.Helper()
	out := c.MustKubectl(t, "get", "--raw", "/metrics")
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="ipamblocks"`) {
			continue
		}
		labels, value, _ := strings.Cut(strings.TrimPrefix(line, "apiserver_request_total{"), "} ")
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		var verb, code string
		for _, l := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(l, "=")
			switch k {
			case "verb":
				verb = strings.Trim(v, `"`)
			case "code":
				code = strings.Trim(v, `"`)
			}
		}
		counts[verb+" "+code] += int(n)
	}
	return counts
}

// blocks reads every IPAMBlock object and checks what must hold whatever
// happened: each block once, owned by one node, no address or handle twice.
// It returns the allocations by handle.
func (c *cluster) blocks(t *testing.T) (map[string]v1alpha1.IPAMAllocation, []v1alpha1.IPAMBlock) {
	t.Helper()
	var list v1alpha1.IPAMBlockList
	if err := json.Unmarshal([]byte(c.MustKubectl(t, "get", "ipamblocks", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	byHandle := map[string]v1alpha1.IPAMAllocation{}
	addrs := map[string]string{}
	var cidrs []netip.Prefix
	for _, b := range list.Items {
		cidr := netip.MustParsePrefix(b.Spec.CIDR)
		for _, o := range cidrs {
			if o.Overlaps(cidr) {
				t.Errorf("blocks %s and %s overlap", o, cidr)
			}
		}
		cidrs = append(cidrs, cidr)
		if b.Spec.Affinity == "" {
			t.Errorf("block %s has no owner", cidr)
		}
		for _, a := range b.Spec.Allocations {
			if h, dup := addrs[a.Address]; dup {
				t.Errorf("address %s handed out twice: %s and %s", a.Address, h, a.Handle)
			}
			if _, dup := byHandle[a.Handle]; dup {
				t.Errorf("handle %s holds two addresses", a.Handle)
			}
			if !cidr.Contains(netip.MustParseAddr(a.Address)) {
				t.Errorf("address %s in block %s", a.Address, cidr)
			}
			addrs[a.Address], byHandle[a.Handle] = a.Handle, a
		}
	}
	return byHandle, list.Items
}

// TestThreeAgentsAllocateConcurrently runs three flatnet-agent processes,
// each its own node, each serving 100 concurrent allocations on one API
// server; then kills one with SIGKILL in the middle of a second round and
// starts it again. No address is handed out twice, every block has one owner,
// every answered allocation is in the API, and the lost races (409 Conflict
// from the API server) are counted.
func TestThreeAgentsAllocateConcurrently(t *testing.T) {
	nodes := []string{"node0", "node1", "node2"}
	c := setup(t, nodes...)
	const n = 100

	agents := map[string]*harness.Agent{}
	for _, node := range nodes {
		agents[node] = c.agent(t, node)
	}
	before := c.requests(t)
	start := time.Now()
	var runs []*run
	for _, node := range nodes {
		runs = append(runs, allocate(t, agents[node], node, "a", n))
	}
	for _, r := range runs {
		<-r.done
		if len(r.errs) > 0 || len(r.acked) != n {
			t.Fatalf("%s: %d of %d allocated; errors: %v", r.node, len(r.acked), n, r.errs)
		}
	}
	took := time.Since(start)
	after := c.requests(t)
	held, blocks := c.blocks(t)
	checkAcked(t, held, runs...)
	writes := after["POST 201"] - before["POST 201"] + after["PUT 200"] - before["PUT 200"]
	conflicts := after["POST 409"] - before["POST 409"] + after["PUT 409"] - before["PUT 409"]
	t.Logf("3 agents × %d concurrent allocations: %d addresses in %d blocks in %v; API: %d successful writes (%.2f per allocation), %d conflicts (409: lost races, retried)",
		n, len(held), len(blocks), took.Round(time.Millisecond), writes, float64(writes)/float64(3*n), conflicts)
	if len(held) != 3*n {
		t.Errorf("the API holds %d allocations, want %d", len(held), 3*n)
	}

	// Second round: node0 is killed after 25 answers.
	victim := "node0"
	runs = nil
	for _, node := range nodes {
		runs = append(runs, allocate(t, agents[node], node, "b", n))
	}
	for range 25 {
		<-runs[0].ack
	}
	agents[victim].Kill()
	<-runs[0].done
	for _, r := range runs[1:] {
		<-r.done
		if len(r.errs) > 0 || len(r.acked) != n {
			t.Fatalf("%s: %d of %d allocated after %s was killed; errors: %v", r.node, len(r.acked), n, victim, r.errs)
		}
	}
	held, _ = c.blocks(t)
	checkAcked(t, held, runs...)
	for h, al := range held {
		if strings.Contains(h, "-b-") && al.Node != victim {
			if _, ok := runs[slices.Index(nodes, al.Node)].acked[h]; !ok {
				t.Errorf("%s holds %s=%s that it never answered", al.Node, h, al.Address)
			}
		}
	}
	t.Logf("%s killed after %d answers (%d failed with it); the API holds %d allocations", victim, len(runs[0].acked), len(runs[0].errs), len(held))

	// The node's agent comes back and goes on from where the API is.
	again := allocate(t, c.agent(t, victim), victim, "c", 20)
	<-again.done
	if len(again.errs) > 0 {
		t.Fatalf("restarted %s: %v", victim, again.errs)
	}
	held, _ = c.blocks(t)
	checkAcked(t, held, again)
}

// checkAcked checks that every allocation an agent answered is in the API,
// at the address it answered, for the node that answered it.
func checkAcked(t *testing.T, held map[string]v1alpha1.IPAMAllocation, runs ...*run) {
	t.Helper()
	for _, r := range runs {
		r.mu.Lock()
		for h, addr := range r.acked {
			al, ok := held[h]
			if !ok || al.Address != addr.String() || al.Node != r.node {
				t.Errorf("%s: answered %s=%s, the API has %+v", r.node, h, addr, al)
			}
		}
		r.mu.Unlock()
	}
}
