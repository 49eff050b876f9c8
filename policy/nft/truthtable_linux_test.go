package nft

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/policy/policytest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	probeWorkers  = 96
	probeTimeout  = 300 * time.Millisecond // a denied probe costs this
	reprobeTimout = 2 * time.Second        // for "denied" where allowed was expected: a slow machine, or a real miss
)

// cells lists every (source, destination, family, protocol, port) of the
// lab, the node as a source included, with the oracle's verdict.
func (l *lab) cells(policies []*networkingv1.NetworkPolicy) []*cell {
	o := policytest.Oracle{Namespaces: l.w.Namespaces, Policies: policies}
	var out []*cell
	for _, fam := range []int{4, 6} {
		for _, src := range append(append([]*labPod{}, l.pods...), nil) {
			for _, dst := range l.pods {
				for _, proto := range policytest.Protocols {
					for _, port := range policytest.Ports {
						c := &cell{src: src, dst: dst, fam: fam, proto: proto, port: port}
						from := policytest.Endpoint{Node: true, Addr: nodeAddr4}
						if fam == 6 {
							from.Addr = nodeAddr6
						}
						if src != nil {
							from = policytest.Endpoint{Pod: src.pod, Addr: src.v4}
							if fam == 6 {
								from.Addr = src.v6
							}
						}
						c.want = o.Allowed(from, policytest.Endpoint{Pod: dst.pod, Addr: c.dstAddr()}, proto, port)
						out = append(out, c)
					}
				}
			}
		}
	}
	return out
}

// verify probes every cell under policies (already enforced) and fails t
// with a diff where the packets disagree with the oracle. It returns the
// number of cells and of re-probes.
func (l *lab) verify(t *testing.T, policies []*networkingv1.NetworkPolicy) (cells, reprobed int) {
	t.Helper()
	ctx := context.Background()
	l.flushConntrack(t)
	all := l.cells(policies)
	l.probeAll(ctx, all, probeWorkers, probeTimeout)
	// A packet that got through is proof; silence may be a slow machine.
	var again []*cell
	for _, c := range all {
		if c.err == nil && c.want && !c.got {
			again = append(again, c)
		}
	}
	l.probeAll(ctx, again, 16, reprobeTimout)
	var bad []string
	for _, c := range all {
		switch {
		case c.err != nil:
			bad = append(bad, fmt.Sprintf("%s: probe failed: %v", c, c.err))
		case c.got != c.want:
			bad = append(bad, fmt.Sprintf("%s: oracle %s, packets %s", c, verdict(c.want), verdict(c.got)))
		}
	}
	if len(bad) > 0 {
		const shown = 30
		if len(bad) > shown {
			bad = append(bad[:shown:shown], fmt.Sprintf("... and %d more", len(bad)-shown))
		}
		t.Errorf("%d of %d cells disagree with the oracle:\n%s\n%s", len(bad), len(all), strings.Join(bad, "\n"), matrix(all))
	}
	return len(all), len(again)
}

func verdict(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

// matrix draws, for each family/protocol/port with a disagreement, sources
// by destinations: "." agrees, "X" the oracle allows and the packets did
// not pass, "!" the oracle denies and they passed.
func matrix(cells []*cell) string {
	type key struct {
		fam   int
		proto corev1.Protocol
		port  int32
	}
	groups := map[key][]*cell{}
	var order []key
	for _, c := range cells {
		k := key{c.fam, c.proto, c.port}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], c)
	}
	var b strings.Builder
	for _, k := range order {
		cs := groups[k]
		differs := false
		for _, c := range cs {
			differs = differs || c.got != c.want || c.err != nil
		}
		if !differs {
			continue
		}
		fmt.Fprintf(&b, "IPv%d %s/%d   (rows: from; columns: to)\n       ", k.fam, k.proto, k.port)
		var dsts []string
		for _, c := range cs {
			if c.src == cs[0].src {
				dsts = append(dsts, c.dst.pod.Namespace+"/"+c.dst.pod.Name)
			}
		}
		fmt.Fprintf(&b, "%s\n", strings.Join(dsts, " "))
		for i := 0; i < len(cs); i += len(dsts) {
			row := cs[i : i+len(dsts)]
			src := "node"
			if row[0].src != nil {
				src = row[0].src.pod.Namespace + "/" + row[0].src.pod.Name
			}
			fmt.Fprintf(&b, "%-6s", src)
			for _, c := range row {
				mark := "."
				switch {
				case c.err != nil:
					mark = "E"
				case c.want && !c.got:
					mark = "X"
				case !c.want && c.got:
					mark = "!"
				}
				fmt.Fprintf(&b, "   %s", mark)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// enforce makes the lab's node enforce policies and waits until it does.
func (l *lab) enforce(t *testing.T, r *Reconciler, policies []*networkingv1.NetworkPolicy) {
	t.Helper()
	r.Set(l.ruleset(t, policies))
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedTruthTable enforces each scenario of policytest on a node
// with 9 pods and probes every cell with real packets — TCP, UDP and SCTP,
// two ports, IPv4 and IPv6, from every pod and from the node — comparing
// with the oracle.
func TestPrivilegedTruthTable(t *testing.T) {
	l := newLab(t)
	r, _ := startReconciler(t, l.node)
	start := time.Now()
	total, reprobed := 0, 0
	scenarios := policytest.Scenarios()
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			l.enforce(t, r, sc.Policies)
			n, again := l.verify(t, sc.Policies)
			total += n
			reprobed += again
		})
	}
	t.Logf("%d scenarios, %d policies, %d cells probed in %v (%d re-probed with %v)",
		len(scenarios), policytest.PolicyCount(scenarios), total, time.Since(start).Round(time.Millisecond), reprobed, reprobeTimout)
}

// startEcho serves a TCP echo in n at port until the test ends.
func startEcho(t *testing.T, l *lab, p *labPod, port int) {
	t.Helper()
	var lis net.Listener
	if err := p.ns.Do(func(ns.NetNS) error {
		var err error
		lis, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					k, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:k]); err != nil {
						return
					}
				}
			})
		}
	})
}

func echoOnce(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err := c.Read(buf)
	return err
}

func ingressFrom(ns, name, podLabel string, fromPod string, port int32) *networkingv1.NetworkPolicy {
	p := intstr.FromInt32(port)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": podLabel}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": fromPod}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &p}},
			}},
		},
	}
}

func denyAll(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny-all"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{
			networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
	}
}

// An established connection survives an update that still allows it (the
// pod's chain is rewritten under it), and, conntrack first, one that no
// longer does; new connections follow the new policy.
func TestPrivilegedEstablishedFlows(t *testing.T) {
	l := newLab(t)
	r, _ := startReconciler(t, l.node)
	a, b := l.pods[0], l.pods[1] // x/a, x/b
	startEcho(t, l, a, 8080)
	allow := ingressFrom("x", "b-to-a", "a", "b", 8080)
	l.enforce(t, r, []*networkingv1.NetworkPolicy{allow})
	var c net.Conn
	if err := b.ns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(a.v4, 8080).String(), 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoOnce(c); err != nil {
		t.Fatal(err)
	}
	// Still allowed, by a changed set of policies: x/a's chain is rewritten.
	l.enforce(t, r, []*networkingv1.NetworkPolicy{allow, ingressFrom("x", "c-to-a", "a", "c", 8080)})
	if err := echoOnce(c); err != nil {
		t.Errorf("established flow cut by an update that still allows it: %v", err)
	}
	// No longer allowed: the flow goes on (replies and the rest of an
	// established connection pass), a new one does not.
	l.enforce(t, r, []*networkingv1.NetworkPolicy{denyAll("x")})
	if err := echoOnce(c); err != nil {
		t.Errorf("established flow cut by deny-all: %v (documented: conntrack lets it finish)", err)
	}
	if ok, err := probe(b.ns, a.v4, corev1.ProtocolTCP, 8080, probeTimeout); err != nil || ok {
		t.Errorf("new connection under deny-all: allowed=%v err=%v", ok, err)
	}
}

// A pod created under deny-all is never reachable: its rules are keyed by
// its veth's name and installed before the veth exists (the agent does so
// while the CNI ADD runs), so its first packet meets them. A prober hammers
// its address from before the veth exists until after it serves; then an
// allowing policy shows the prober would have seen it.
func TestPrivilegedNewPodUnderDenyAll(t *testing.T) {
	for _, known := range []bool{true, false} {
		name := "pod known"
		if !known {
			name = "pod not known yet"
		}
		t.Run(name, func(t *testing.T) {
			l := newLab(t)
			r, _ := startReconciler(t, l.node)
			d := l.w.Pod("x", "a").DeepCopy()
			d.Name = "d"
			d.Status.PodIPs = []corev1.PodIP{{IP: "10.10.0.9"}, {IP: "fd10::9"}}
			handle := "cid-x-d/eth0"
			newPod := policy.LocalPod{Namespace: "x", Name: "d", Handle: handle, Addrs: []netip.Addr{netip.MustParseAddr("10.10.0.9"), netip.MustParseAddr("fd10::9")}}
			ruleset := func(policies ...*networkingv1.NetworkPolicy) policy.Ruleset {
				pods := []*corev1.Pod{}
				for _, p := range l.pods {
					pods = append(pods, p.pod)
				}
				if known {
					pods = append(pods, d)
				}
				return policy.Compute(policy.Cluster{Pods: pods, Namespaces: l.w.Namespaces, Policies: policies}, append(l.localPods(), newPod))
			}
			deny := &networkingv1.NetworkPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny-ingress"},
				Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
			}
			// The agent's order: the allocation is known, the rules go in...
			r.Set(ruleset(deny))
			if err := r.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			// ...while a prober in y/a (egress open) is already knocking...
			prober := l.pods[3] // y/a
			var passed, tries atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, dst := range newPod.Addrs {
				for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
					wg.Go(func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							tries.Add(1)
							if ok, _ := probe(prober.ns, dst, proto, 80, 50*time.Millisecond); ok {
								passed.Add(1)
							}
						}
					})
				}
			}
			// ...and only then does the CNI plugin wire the pod, which serves.
			lp := l.addPod(t, d, len(l.pods))
			if lp.veth != policy.VethOf(handle) {
				t.Fatalf("veth %s, want %s", lp.veth, policy.VethOf(handle))
			}
			time.Sleep(time.Second)
			if n := passed.Load(); n > 0 {
				t.Errorf("the new pod under deny-all was reached %d times of %d", n, tries.Load())
			}
			// Allowing y makes it reachable: the prober works.
			allowY := &networkingv1.NetworkPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "allow-y"},
				Spec: networkingv1.NetworkPolicySpec{
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}}}},
				},
			}
			r.Set(ruleset(deny, allowY))
			if err := r.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for passed.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			if known && passed.Load() == 0 {
				t.Errorf("allowed from y, the new pod was still not reached (%d tries)", tries.Load())
			}
			if !known && passed.Load() != 0 {
				t.Errorf("a pod whose Pod object is unknown was reached: it must stay closed")
			}
			t.Logf("%d probes", tries.Load())
		})
	}
}

// Policy stays enforced while the agent is down and across its restart:
// the truth table holds with the reconciler stopped, and with a new one
// before and after its first Set, which writes nothing.
func TestPrivilegedRestartUnderPolicy(t *testing.T) {
	l := newLab(t)
	r, stop := startReconciler(t, l.node)
	policies := policytest.Scenarios()[len(policytest.Scenarios())-1].Policies // everything at once
	l.enforce(t, r, policies)
	stop()
	t.Run("agent down", func(t *testing.T) { l.verify(t, policies) })
	r2, _ := startReconciler(t, l.node)
	if err := r2.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Run("agent up, policy not known yet", func(t *testing.T) { l.verify(t, policies) })
	l.enforce(t, r2, policies)
	t.Run("agent up again", func(t *testing.T) { l.verify(t, policies) })
	if s := r2.Stats(); s.Transactions != 0 {
		t.Errorf("the restarted reconciler wrote %d transactions, want none: %+v", s.Transactions, s)
	}
}
