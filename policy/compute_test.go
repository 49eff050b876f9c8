package policy_test

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/cni"
	"github.com/flatnet-io/flatnet/policy"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func mkPod(ns, name string, labels map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func withPorts(p *corev1.Pod, ports ...corev1.ContainerPort) *corev1.Pod {
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c", Ports: ports})
	return p
}

func mkNS(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func mkPolicy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func ptr[T any](v T) *T { return &v }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

var (
	ingressType = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressType  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
)

// the cluster of the table tests: namespaces n1 (env=prod) and n2
// (env=dev), pods n1/a (app=web), n1/b (app=db), n2/c (app=web), all local.
func baseCluster() (policy.Cluster, []policy.LocalPod) {
	c := policy.Cluster{
		Namespaces: []*corev1.Namespace{mkNS("n1", map[string]string{"env": "prod"}), mkNS("n2", map[string]string{"env": "dev"})},
		Pods: []*corev1.Pod{
			withPorts(mkPod("n1", "a", map[string]string{"app": "web"}, "10.0.0.1", "fd00::1"),
				corev1.ContainerPort{Name: "http", ContainerPort: 8080},
				corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}),
			withPorts(mkPod("n1", "b", map[string]string{"app": "db"}, "10.0.0.2"),
				corev1.ContainerPort{Name: "http", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}),
			mkPod("n2", "c", map[string]string{"app": "web"}, "10.0.1.3"),
		},
	}
	var local []policy.LocalPod
	for _, p := range c.Pods {
		var as []netip.Addr
		for _, ip := range p.Status.PodIPs {
			as = append(as, netip.MustParseAddr(ip.IP))
		}
		local = append(local, policy.LocalPod{Namespace: p.Namespace, Name: p.Name, Handle: "cid-" + p.Name + "/eth0", Addrs: as})
	}
	return c, local
}

// netCmp compares netip values by value.
var netCmp = []cmp.Option{
	cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
	cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }),
}

func veth(name string) string { return policy.VethOf("cid-" + name + "/eth0") }

// setOf finds the set an Allow names and returns its members, as strings.
func setOf(t *testing.T, rs policy.Ruleset, name string) []string {
	t.Helper()
	s, ok := rs.Set(name)
	if !ok {
		t.Fatalf("set %s is named by a rule but not in the ruleset", name)
	}
	var out []string
	for _, a := range s.Addrs {
		out = append(out, a.String())
	}
	for _, tu := range s.Tuples {
		out = append(out, tu.Addr.String()+" "+tu.Proto.String()+" "+itoa(tu.Port))
	}
	return out
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// describe renders one pod's rules compactly: "ingress: <allow>; ..." with
// sets expanded, so a table can state them.
func describe(t *testing.T, rs policy.Ruleset, v string) string {
	t.Helper()
	p, ok := rs.Pod(v)
	if !ok {
		return "absent"
	}
	var parts []string
	for _, d := range []struct {
		name string
		d    *policy.Direction
	}{{"ingress", p.Ingress}, {"egress", p.Egress}} {
		if d.d == nil {
			parts = append(parts, d.name+" open")
			continue
		}
		var allows []string
		for _, a := range d.d.Allow {
			s := ""
			switch a.Peer.Kind {
			case policy.AnyPeer:
				s = "any"
			case policy.PodSet, policy.PodPortSet:
				s = "{" + strings.Join(setOf(t, rs, a.Peer.Set), ",") + "}"
			case policy.Block:
				s = a.Peer.CIDR.String()
				for _, e := range a.Peer.Except {
					s += "-" + e.String()
				}
			}
			if a.Ports != nil {
				var ps []string
				for _, r := range a.Ports {
					ps = append(ps, r.String())
				}
				s += " " + strings.Join(ps, ",")
			}
			allows = append(allows, s)
		}
		parts = append(parts, d.name+" ["+strings.Join(allows, "; ")+"]")
	}
	return strings.Join(parts, ", ")
}

func TestCompute(t *testing.T) {
	udp := ptr(corev1.ProtocolUDP)
	sctp := ptr(corev1.ProtocolSCTP)
	port := func(n int32) *intstr.IntOrString { return ptr(intstr.FromInt32(n)) }
	name := func(s string) *intstr.IntOrString { return ptr(intstr.FromString(s)) }
	for _, tc := range []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		want     map[string]string // pod → describe
		warn     string
	}{{
		name: "no policy: everything open",
		want: map[string]string{"a": "ingress open, egress open", "c": "ingress open, egress open"},
	}, {
		name:     "empty podSelector, explicit Ingress, no rules: deny all ingress of the namespace",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: ingressType})},
		want:     map[string]string{"a": "ingress [], egress open", "b": "ingress [], egress open", "c": "ingress open, egress open"},
	}, {
		name:     "explicit Egress only",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "deny", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "db"), PolicyTypes: egressType})},
		want:     map[string]string{"a": "ingress open, egress open", "b": "ingress open, egress []"},
	}, {
		name: "implied policyTypes: egress rules isolate both ways",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "web"),
			Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
		})},
		want: map[string]string{"a": "ingress [], egress [any]", "b": "ingress open, egress open"},
	}, {
		name: "implied policyTypes: no egress rules isolate ingress only",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{}},
		})},
		want: map[string]string{"a": "ingress [any], egress open"},
	}, {
		name: "podSelector peer: the policy's namespace only, both families",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "db"),
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}},
		})},
		want: map[string]string{"b": "ingress [{10.0.0.1,fd00::1}], egress open"},
	}, {
		name: "namespaceSelector alone; with podSelector; empty namespaceSelector",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "db"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: sel("env", "dev")},
				{NamespaceSelector: sel("env", "prod"), PodSelector: sel("app", "db")},
				{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("app", "web")},
			}}},
		})},
		want: map[string]string{"b": "ingress [{10.0.1.3}; {10.0.0.2}; {10.0.0.1,10.0.1.3,fd00::1}], egress open"},
	}, {
		name: "matchExpressions and the metadata.name label",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"web"}}}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: sel(corev1.LabelMetadataName, "n2"), // n2's object lacks it: the API server's label is implied
				PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}},
			}}}},
		})},
		want: map[string]string{"a": "ingress open, egress open", "b": "ingress [{10.0.1.3}], egress open"},
	}, {
		name: "ipBlock: masked, excepts sorted, an except outside dropped, per family",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n2", "p", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.7/16", Except: []string{"10.0.1.0/24", "10.0.0.0/24", "192.168.0.0/24"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8"}},
			}}},
		})},
		want: map[string]string{"c": "ingress [10.0.0.0/16-10.0.0.0/24-10.0.1.0/24; fd00::/8], egress open"},
	}, {
		name: "ports: TCP default, all UDP ports, endPort, covered ranges dropped, SCTP",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n2", "p", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Port: port(80)},
				{Protocol: udp},
				{Protocol: udp, Port: port(53)},
				{Port: port(79), EndPort: ptr(int32(90))},
				{Protocol: sctp, Port: port(7), EndPort: ptr(int32(7))},
			}}},
		})},
		want: map[string]string{"c": "ingress [any tcp/79-90,udp,sctp/7], egress open"},
	}, {
		name: "named port on ingress: resolved per pod, by protocol; unresolved rule allows nothing",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{Ports: []networkingv1.NetworkPolicyPort{{Port: name("http")}}},
				{Ports: []networkingv1.NetworkPolicyPort{{Port: name("dns")}}}, // dns is UDP on a: TCP resolves to nothing
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: udp, Port: name("dns")}, {Port: port(1)}}},
			},
		})},
		want: map[string]string{
			"a": "ingress [any tcp/8080; any tcp/1,udp/53], egress open",
			"b": "ingress [any tcp/9090; any tcp/1], egress open",
		},
	}, {
		name: "named port on egress: (address, protocol, port) of each destination pod",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n2", "p", networkingv1.NetworkPolicySpec{
			PolicyTypes: egressType,
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("env", "prod")}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.2/32"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: name("http")}, {Protocol: udp, Port: port(5353)}},
			}},
		})},
		want: map[string]string{"c": "ingress open, egress [{10.0.0.1,10.0.0.2,fd00::1} udp/5353; 10.0.0.2/32 udp/5353; " +
			"{10.0.0.1 tcp 8080,10.0.0.2 tcp 9090,fd00::1 tcp 8080}; {10.0.0.2 tcp 9090}]"},
	}, {
		name: "several policies on one pod: a union, in policy name order",
		policies: []*networkingv1.NetworkPolicy{
			mkPolicy("n1", "z-second", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"), Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(2)}}}}}),
			mkPolicy("n1", "a-first", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(1)}}}}}),
		},
		want: map[string]string{"a": "ingress [any tcp/1; any tcp/2], egress open", "b": "ingress [any tcp/1], egress open"},
	}, {
		name: "invalid pieces match nothing and are reported",
		policies: []*networkingv1.NetworkPolicy{mkPolicy("n2", "p", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{IPBlock: &networkingv1.IPBlock{CIDR: "not-a-cidr"}},
				{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}}},
			}}},
		})},
		want: map[string]string{"c": "ingress [], egress open"},
		warn: "n2/p ingress[0] peer[0] ipBlock",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c, local := baseCluster()
			c.Policies = tc.policies
			rs := policy.Compute(c, local)
			for pod, want := range tc.want {
				if got := describe(t, rs, veth(pod)); got != want {
					t.Errorf("pod %s:\n got %s\nwant %s", pod, got, want)
				}
			}
			warnings := strings.Join(rs.Warnings, "\n")
			if tc.warn == "" && warnings != "" || !strings.Contains(warnings, tc.warn) {
				t.Errorf("warnings %q, want one with %q", warnings, tc.warn)
			}
		})
	}
}

// Sets are named by what selects their members: pods coming and going
// change elements, never rules; two rules with one selector share a set.
func TestSetsAreSharedAndNamedBySelector(t *testing.T) {
	c, local := baseCluster()
	peer := []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}
	c.Policies = []*networkingv1.NetworkPolicy{
		mkPolicy("n1", "p1", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: peer}}}),
		mkPolicy("n1", "p2", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "db"), PolicyTypes: egressType, Egress: []networkingv1.NetworkPolicyEgressRule{{To: peer}}}),
	}
	before := policy.Compute(c, local)
	if len(before.Sets) != 1 {
		t.Fatalf("sets %+v, want one shared", before.Sets)
	}
	c.Pods = append(c.Pods, mkPod("n1", "d", map[string]string{"app": "web"}, "10.0.0.4"))
	after := policy.Compute(c, local)
	b, _ := before.Pod(veth("b"))
	a, _ := after.Pod(veth("b"))
	if diff := cmp.Diff(b, a, netCmp...); diff != "" {
		t.Errorf("a new pod changed the rules of b (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(addrs("10.0.0.1", "10.0.0.4", "fd00::1"), after.Sets[0].Addrs, netCmp...); diff != "" {
		t.Errorf("set after (-want +got):\n%s", diff)
	}
}

func TestPodsLeftOut(t *testing.T) {
	c, local := baseCluster()
	host := mkPod("n1", "host", map[string]string{"app": "web"}, "192.0.2.1")
	host.Spec.HostNetwork = true
	done := mkPod("n1", "done", map[string]string{"app": "web"}, "10.0.0.9")
	done.Status.Phase = corev1.PodSucceeded
	noIP := mkPod("n1", "pending", map[string]string{"app": "web"})
	c.Pods = append(c.Pods, host, done, noIP)
	local = append(local,
		policy.LocalPod{Namespace: "n1", Name: "host", Handle: "cid-host/eth0"},
		policy.LocalPod{Namespace: "n1", Name: "unknown", Handle: "cid-unknown/eth0", Addrs: addrs("10.0.0.10")},
	)
	c.Policies = []*networkingv1.NetworkPolicy{mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}},
	})}
	rs := policy.Compute(c, local)
	for pod, want := range map[string]string{
		"b":       "ingress [{10.0.0.1,fd00::1}], egress open", // not host, done or pending
		"host":    "absent",                                    // hostNetwork: never isolated
		"unknown": "ingress [], egress []",                     // no Pod yet: closed
	} {
		if got := describe(t, rs, veth(pod)); got != want {
			t.Errorf("pod %s:\n got %s\nwant %s", pod, got, want)
		}
	}
	if len(rs.Warnings) != 1 || !strings.Contains(rs.Warnings[0], "n1/unknown") {
		t.Errorf("warnings %q, want one for n1/unknown", rs.Warnings)
	}
	if p, _ := rs.Pod(veth("unknown")); !cmp.Equal(p.Addrs, addrs("10.0.0.10"), netCmp...) {
		t.Errorf("unknown pod's addresses %v, want IPAM's", p.Addrs)
	}
}

func TestVethOfIsTheCNIPluginsName(t *testing.T) {
	for _, h := range [][2]string{{"0123456789abcdef", "eth0"}, {"c", "net1"}} {
		if got, want := policy.VethOf(h[0]+"/"+h[1]), cni.HostVethName(h[0], h[1]); got != want {
			t.Errorf("VethOf(%s/%s) = %s, cni says %s", h[0], h[1], got, want)
		}
	}
}

func TestComputeIsDeterministic(t *testing.T) {
	c, local := baseCluster()
	c.Policies = []*networkingv1.NetworkPolicy{
		mkPolicy("n1", "p", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{}}, {PodSelector: sel("app", "db")}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}},
		}}}}),
	}
	first := policy.Compute(c, local)
	for i := 0; i < 20; i++ {
		// Reverse the inputs: the answer must not depend on their order.
		for j, k := 0, len(c.Pods)-1; j < k; j, k = j+1, k-1 {
			c.Pods[j], c.Pods[k] = c.Pods[k], c.Pods[j]
		}
		for j, k := 0, len(local)-1; j < k; j, k = j+1, k-1 {
			local[j], local[k] = local[k], local[j]
		}
		if diff := cmp.Diff(first, policy.Compute(c, local), netCmp...); diff != "" {
			t.Fatalf("Compute differs on reordered input (-first +now):\n%s", diff)
		}
	}
}
