package cni_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/flatnet-io/flatnet/cni"
	"github.com/flatnet-io/flatnet/test/harness"
)

// The node's own addresses, on its lo, inside its namespace.
var (
	nodeV4 = netip.MustParseAddr("192.0.2.10")
	nodeV6 = netip.MustParseAddr("2001:db8::10")
)

func TestMain(m *testing.M) {
	harness.SweepLeftovers()
	os.Exit(m.Run())
}

// node is a node namespace with a running agent and a runtime calling the plugin.
type node struct {
	*harness.NetNS
	agent *harness.Agent
	rt    *harness.Runtime
}

const conflist11 = `{"cniVersion": "1.1.0", "name": "flatnet", "plugins": [
  {"type": "flatnet", "agentSocket": %q, "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}}]}`

func newNode(t testing.TB, cfg harness.AgentConfig, conflist string) *node {
	t.Helper()
	harness.Require(t, "ip", "ping", "bash")
	n := &node{NetNS: harness.NewNetNS(t, "node")}
	n.MustExec(t, "ip", "addr", "add", nodeV4.String()+"/32", "dev", "lo")
	n.MustExec(t, "ip", "addr", "add", nodeV6.String()+"/128", "dev", "lo", "nodad")
	if cfg.Node == "" {
		cfg.Node = "node1"
	}
	if cfg.Pools == nil {
		cfg.Pools = []harness.Pool{{Name: "v4", CIDR: "10.244.0.0/24", BlockSize: 26}}
	}
	n.agent = harness.StartAgent(t, n.NetNS, cfg)
	if conflist == "" {
		conflist = conflist11
	}
	n.rt = harness.NewRuntime(t, n.NetNS, fmt.Sprintf(conflist, n.agent.Socket))
	return n
}

// add attaches a new pod and returns it with its result.
func (n *node) add(t *testing.T, name string) (*harness.Pod, *current.Result) {
	t.Helper()
	p := harness.NewPod(t, name)
	res, err := n.rt.Add(p)
	if err != nil {
		t.Fatalf("ADD %s: %v", name, err)
	}
	return p, res
}

func podIP(t *testing.T, res *current.Result, v4 bool) netip.Addr {
	t.Helper()
	for _, ipc := range res.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		if a = a.Unmap(); a.Is4() == v4 {
			return a
		}
	}
	t.Fatalf("no IPv4=%v address in %v", v4, res)
	return netip.Addr{}
}

// flatnetState is what flatnet has in the node's kernel and IPAM: its veths,
// its routes, its allocations.
func (n *node) flatnetState(t *testing.T) (veths, routes []string, allocs int) {
	t.Helper()
	veths, routes = n.kernelState(t)
	return veths, routes, len(n.agent.Allocations(t))
}

// kernelState is flatnet's veths and routes in the node.
func (n *node) kernelState(t *testing.T) (veths, routes []string) {
	t.Helper()
	for _, l := range n.Links(t) {
		if strings.HasPrefix(l, "fln") {
			veths = append(veths, l)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, r := range n.Routes(t, fam) {
			if strings.Contains(r, "proto 75") {
				routes = append(routes, r)
			}
		}
	}
	return veths, routes
}

func (n *node) wantNothingLeft(t *testing.T, what string) {
	t.Helper()
	if veths, routes, allocs := n.flatnetState(t); len(veths)+len(routes)+allocs > 0 {
		t.Errorf("%s left behind: veths %v, routes %v, %d allocations", what, veths, routes, allocs)
	}
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestPrivilegedAddWiresPodIntoHostRouting(t *testing.T) {
	n := newNode(t, harness.AgentConfig{}, "")
	a, resA := n.add(t, "pod-a")
	b, resB := n.add(t, "pod-b")
	ipA, ipB := podIP(t, resA, true), podIP(t, resB, true)

	// The result: host end, pod end in its sandbox, a /32 with the link-local
	// gateway, a default route, DNS passed through.
	if len(resA.Interfaces) != 2 || resA.Interfaces[0].Name != cni.HostVethName(a.ID, "eth0") || resA.Interfaces[0].Sandbox != "" ||
		resA.Interfaces[1].Name != "eth0" || resA.Interfaces[1].Sandbox != "/run/netns/"+a.Name || resA.Interfaces[1].Mac == "" {
		t.Errorf("interfaces: %+v %+v", resA.Interfaces[0], resA.Interfaces[1])
	}
	if len(resA.IPs) != 1 || resA.IPs[0].Address.String() != ipA.String()+"/32" || resA.IPs[0].Gateway.String() != "169.254.1.1" || *resA.IPs[0].Interface != 1 {
		t.Errorf("ips: %+v", resA.IPs[0])
	}
	if len(resA.Routes) != 1 || resA.Routes[0].String() != "{Dst:{IP:0.0.0.0 Mask:00000000} GW:169.254.1.1 MTU:0 AdvMSS:0 Priority:0 Table:<nil> Scope:<nil>}" {
		t.Errorf("routes: %v", resA.Routes)
	}
	if !slices.Equal(resA.DNS.Nameservers, []string{"10.96.0.10"}) {
		t.Errorf("dns: %+v", resA.DNS)
	}

	// Pod to node, pod to pod: ICMP and TCP, and no NAT on the way.
	for _, c := range []struct {
		from *harness.Pod
		to   netip.Addr
	}{{a, nodeV4}, {a, ipB}, {b, ipA}, {b, nodeV4}} {
		if err := c.from.Ping(c.to); err != nil {
			t.Errorf("ping %s -> %s: %v", c.from.Name, c.to, err)
		}
	}
	lisNode := n.Listen(t, nodeV4.String()+":0")
	if src, err := harness.TCPSource(t, a.NetNS, lisNode, lisNode.Addr().String()); err != nil || src != ipA {
		t.Errorf("TCP pod-a -> node: source %v (%v), want %s", src, err, ipA)
	}
	lisB := b.Listen(t, ipB.String()+":0")
	if src, err := harness.TCPSource(t, a.NetNS, lisB, lisB.Addr().String()); err != nil || src != ipA {
		t.Errorf("TCP pod-a -> pod-b: source %v (%v), want %s", src, err, ipA)
	}

	// Two processes in one pod share localhost: this test process listens in
	// pod-a, a shell started in pod-a connects.
	lisLo := a.Listen(t, "127.0.0.1:0")
	go func() {
		if c, err := lisLo.Accept(); err == nil {
			_, _ = c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	port := lisLo.Addr().(interface{ String() string }).String()[len("127.0.0.1:"):]
	if out, err := a.Exec("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port+"; head -1 <&3"); err != nil || strings.TrimSpace(out) != "hello" {
		t.Errorf("localhost inside pod-a: %q, %v", out, err)
	}

	// No bridge anywhere.
	for _, ns := range []*harness.NetNS{n.NetNS, a.NetNS, b.NetNS} {
		for _, l := range ns.Links(t) {
			if strings.HasSuffix(l, " bridge") {
				t.Errorf("bridge in %s: %s", ns.Name, l)
			}
		}
	}
	// The host route carries flatnet's protocol.
	want := fmt.Sprintf("%s dev %s proto 75 scope link", ipA, cni.HostVethName(a.ID, "eth0"))
	if !slices.Contains(n.Routes(t, "-4"), want) {
		t.Errorf("host routes %q lack %q", n.Routes(t, "-4"), want)
	}

	if err := n.rt.Check(a); err != nil {
		t.Errorf("CHECK pod-a: %v", err)
	}

	// DEL: veth, route and address go; DEL again, and DEL of what was never added, succeed.
	if err := n.rt.Del(a); err != nil {
		t.Fatalf("DEL pod-a: %v", err)
	}
	if err := n.rt.Del(a); err != nil {
		t.Errorf("second DEL pod-a: %v", err)
	}
	if err := n.rt.Del(harness.NewPod(t, "never-added")); err != nil {
		t.Errorf("DEL of a pod never added: %v", err)
	}
	veths, routes, allocs := n.flatnetState(t)
	if len(veths) != 1 || len(routes) != 1 || allocs != 1 {
		t.Errorf("after DEL pod-a: veths %v routes %v allocations %d; want pod-b's only", veths, routes, allocs)
	}
	if err := b.Ping(nodeV4); err != nil {
		t.Errorf("pod-b lost connectivity when pod-a went: %v", err)
	}

	// CHECK notices what is missing.
	n.MustExec(t, "ip", "route", "del", ipB.String()+"/32")
	if err := n.rt.Check(b); err == nil || !strings.Contains(err.Error(), "no flatnet host route to "+ipB.String()) {
		t.Errorf("CHECK after deleting the host route: %v", err)
	}

	// DEL of a pod whose namespace is gone.
	harness.MustRun(t, "ip", "netns", "del", b.Name)
	if err := n.rt.Del(b); err != nil {
		t.Errorf("DEL after the netns went: %v", err)
	}
	n.wantNothingLeft(t, "DEL of every pod")
}

// ipsOf lists the addresses of a result.
func ipsOf(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

func TestPrivilegedConcurrentAdds(t *testing.T) {
	n := newNode(t, harness.AgentConfig{}, "")
	const pods = 20
	var wg sync.WaitGroup
	results := make([]*current.Result, pods)
	podsList := make([]*harness.Pod, pods)
	for i := range pods {
		podsList[i] = harness.NewPod(t, fmt.Sprintf("p%d", i))
	}
	errs := make([]error, pods)
	for i := range pods {
		wg.Go(func() { results[i], errs[i] = n.rt.Add(podsList[i]) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range pods {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		for _, ip := range ipsOf(results[i]) {
			if seen[ip] {
				t.Errorf("%s handed out twice", ip)
			}
			seen[ip] = true
		}
	}
	veths, routes, allocs := n.flatnetState(t)
	if len(veths) != pods || len(routes) != pods || allocs != pods {
		t.Errorf("%d veths, %d routes, %d allocations; want %d each", len(veths), len(routes), allocs, pods)
	}
	for i := range pods {
		wg.Go(func() { errs[i] = n.rt.Del(podsList[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	n.wantNothingLeft(t, "20 parallel DELs")
}

func TestPrivilegedDualStack(t *testing.T) {
	n := newNode(t, harness.AgentConfig{Pools: []harness.Pool{
		{Name: "v4", CIDR: "10.244.0.0/24", BlockSize: 26},
		{Name: "v6", CIDR: "fd00:10:244::/120", BlockSize: 122},
	}}, "")
	a, res := n.add(t, "dual")
	if got := ipsOf(res); len(got) != 2 || !strings.HasSuffix(got[0], "/32") || !strings.HasSuffix(got[1], "/128") {
		t.Fatalf("dual-stack IPs %v", got)
	}
	if len(res.Routes) != 2 || res.Routes[1].GW.String() != "fe80::1" {
		t.Errorf("routes %v", res.Routes)
	}
	for _, dst := range []netip.Addr{nodeV4, nodeV6} {
		if err := a.Ping(dst); err != nil {
			t.Errorf("ping %s: %v", dst, err)
		}
	}
	lis := n.Listen(t, "["+nodeV6.String()+"]:0")
	if src, err := harness.TCPSource(t, a.NetNS, lis, lis.Addr().String()); err != nil || src != podIP(t, res, false) {
		t.Errorf("TCP over IPv6: source %v (%v), want %s", src, err, podIP(t, res, false))
	}
	if err := n.rt.Check(a); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := n.rt.Del(a); err != nil {
		t.Fatal(err)
	}
	n.wantNothingLeft(t, "dual-stack DEL")
}
