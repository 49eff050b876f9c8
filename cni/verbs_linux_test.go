package cni_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/flatnet-io/flatnet/cni"
	"github.com/flatnet-io/flatnet/test/harness"
)

// Debian's reference plugins speak CNI up to 1.0.0, so the chain is 1.0.0.
const chainConflist = `{"cniVersion": "1.0.0", "name": "flatnet", "plugins": [
  {"type": "flatnet", "agentSocket": %q},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "bandwidth", "capabilities": {"bandwidth": true}}]}`

// TestPrivilegedChainWithPortmapAndBandwidth runs flatnet first in a chain with
// the reference portmap and bandwidth plugins: they find the pod's host veth
// and address in flatnet's result, and their work is real (a DNAT that carries
// traffic, a shaper on the veth).
func TestPrivilegedChainWithPortmapAndBandwidth(t *testing.T) {
	harness.Require(t, "iptables", "tc", harness.ReferencePlugins+"/portmap", harness.ReferencePlugins+"/bandwidth")
	// Dual-stack: both families through the chain.
	n := newNode(t, harness.AgentConfig{Pools: []harness.Pool{
		{Name: "v4", CIDR: "10.244.0.0/24", BlockSize: 26},
		{Name: "v6", CIDR: "fd00:10:244::/120", BlockSize: 122},
	}}, chainConflist)
	p := harness.NewPod(t, "chained")
	p.Caps = map[string]any{
		"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}},
		"bandwidth":    map[string]any{"ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000},
	}
	res, err := n.rt.Add(p)
	if err != nil {
		t.Fatalf("ADD through the chain: %v", err)
	}
	ip := podIP(t, res, true)
	if len(res.IPs) != 2 || len(res.Interfaces) < 2 || res.Interfaces[0].Name != cni.HostVethName(p.ID, "eth0") || res.Interfaces[1].Name != "eth0" {
		t.Errorf("the chain's result lost flatnet's: %v", res)
	}

	// portmap: node:18080 reaches the pod's :80, and the pod sees the node's
	// own address, not a rewritten one.
	lis := p.Listen(t, ip.String()+":80")
	if src, err := harness.TCPSource(t, n.NetNS, lis, nodeV4.String()+":18080"); err != nil || src != nodeV4 {
		t.Errorf("TCP node -> %s:18080 (DNAT to the pod): source %v, %v", nodeV4, src, err)
	}
	// bandwidth: a token bucket on the host veth (ingress to the pod), and an
	// ifb device for its egress.
	hostVeth := cni.HostVethName(p.ID, "eth0")
	if out := n.MustExec(t, "tc", "qdisc", "show", "dev", hostVeth); !strings.Contains(out, "tbf") {
		t.Errorf("no tbf qdisc on %s: %s", hostVeth, out)
	}
	// CHECK through the chain without portmap: Debian's portmap (1.1.1) CHECK
	// looks for its IPv4 rules in ip6tables too and always fails.
	noPortmap := *n.rt.List
	noPortmap.Plugins = slices.DeleteFunc(slices.Clone(noPortmap.Plugins), func(p *libcni.PluginConfig) bool { return p.Network.Type == "portmap" })
	if err := n.rt.CheckList(&noPortmap, p); err != nil {
		t.Errorf("CHECK through flatnet and bandwidth: %v", err)
	}

	if err := n.rt.Del(p); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	if out := n.MustExec(t, "iptables-save", "-t", "nat"); strings.Contains(out, ip.String()) {
		t.Errorf("portmap rules for %s left after DEL:\n%s", ip, out)
	}
	for _, l := range n.Links(t) {
		if strings.HasPrefix(l, "bwp") {
			t.Errorf("bandwidth's ifb %s left after DEL", l)
		}
	}
	n.wantNothingLeft(t, "chained DEL")
}

// TestPrivilegedGC: the runtime knows two attachments; a third, which it has
// forgotten, loses its veth, its route and its address, and the two stay whole.
func TestPrivilegedGC(t *testing.T) {
	n := newNode(t, harness.AgentConfig{}, "")
	a, _ := n.add(t, "keep-a")
	b, resB := n.add(t, "keep-b")
	_, resC := n.add(t, "forgotten")

	if err := n.rt.GC(a, b); err != nil {
		t.Fatalf("GC: %v", err)
	}
	veths, routes, allocs := n.flatnetState(t)
	want := []string{cni.HostVethName(a.ID, "eth0") + " veth", cni.HostVethName(b.ID, "eth0") + " veth"}
	slices.Sort(want)
	slices.Sort(veths)
	if !slices.Equal(veths, want) || len(routes) != 2 || allocs != 2 {
		t.Errorf("after GC: veths %v, routes %v, %d allocations; want %v, 2 routes, 2 allocations", veths, routes, allocs, want)
	}
	for _, al := range n.agent.Allocations(t) {
		if al.GetAddress() == podIP(t, resC, true).String() {
			t.Errorf("GC kept the forgotten pod's %s", al.GetAddress())
		}
	}
	if err := a.Ping(podIP(t, resB, true)); err != nil {
		t.Errorf("pods that GC kept cannot talk: %v", err)
	}
	for _, p := range []*harness.Pod{a, b} {
		if err := n.rt.Check(p); err != nil {
			t.Errorf("CHECK %s after GC: %v", p.Name, err)
		}
	}
	// GC with nothing valid clears the node.
	if err := n.rt.GC(); err != nil {
		t.Fatalf("GC of everything: %v", err)
	}
	n.wantNothingLeft(t, "GC with no valid attachments")
}

// TestPrivilegedStatusFollowsTheAgent: STATUS succeeds while the agent serves
// and says 50 (plugin not available) once it is gone; ADD then fails with 11
// (try again later), DEL still removes the pod's veth and route.
func TestPrivilegedStatusFollowsTheAgent(t *testing.T) {
	n := newNode(t, harness.AgentConfig{}, "")
	if err := n.rt.Status(); err != nil {
		t.Fatalf("STATUS with the agent up: %v", err)
	}
	p, _ := n.add(t, "orphan")
	n.agent.Stop(t)
	if err := n.rt.Status(); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("STATUS with the agent down: %v; want code 50", err)
	}
	if _, err := n.rt.Add(harness.NewPod(t, "late")); cniCode(err) != types.ErrTryAgainLater {
		t.Errorf("ADD with the agent down: %v; want code 11", err)
	}
	// DEL reports the failure so the runtime retries, but the interfaces and
	// routes are already gone.
	if err := n.rt.Del(p); cniCode(err) != types.ErrTryAgainLater {
		t.Errorf("DEL with the agent down: %v; want code 11", err)
	}
	if veths, routes := n.kernelState(t); len(veths)+len(routes) > 0 {
		t.Errorf("DEL with the agent down left veths %v, routes %v", veths, routes)
	}
}

// TestPrivilegedVersions: VERSION lists what the plugin speaks, and an older
// runtime's 0.4.0 configuration works end to end.
func TestPrivilegedVersions(t *testing.T) {
	n := newNode(t, harness.AgentConfig{}, `{"cniVersion": "0.4.0", "name": "flatnet", "plugins": [{"type": "flatnet", "agentSocket": %q}]}`)
	info, err := n.rt.CNI.GetVersionInfo(context.Background(), "flatnet")
	if err != nil {
		t.Fatal(err)
	}
	got := info.SupportedVersions()
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if !slices.Contains(got, v) {
			t.Errorf("VERSION lists %v, lacks %s", got, v)
		}
	}
	p, _ := n.add(t, "old-runtime")
	if err := p.Ping(nodeV4); err != nil {
		t.Errorf("0.4.0 pod cannot reach the node: %v", err)
	}
	if err := n.rt.Check(p); err != nil {
		t.Errorf("0.4.0 CHECK: %v", err)
	}
	if err := n.rt.Del(p); err != nil {
		t.Fatal(err)
	}
	n.wantNothingLeft(t, "0.4.0 DEL")
}
