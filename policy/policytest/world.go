package policytest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The truth table's world, in the spirit of the upstream netpol e2e and
// cyclonus suites: namespaces x, y, z, each with pods a, b, c, every pod
// serving TCP, UDP and SCTP on Ports, with an IPv4 and an IPv6 address.
var (
	NamespaceNames = []string{"x", "y", "z"}
	PodNames       = []string{"a", "b", "c"}
	Ports          = []int32{80, 81}
	Protocols      = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
)

// World is the truth table's pods and namespaces.
type World struct {
	Namespaces []*corev1.Namespace
	Pods       []*corev1.Pod
}

// NewWorld builds the pods and namespaces. Labels: every namespace has
// ns=<name> (and the API server's kubernetes.io/metadata.name); x and y have
// team=a, z team=b. Every pod has pod=<name>; a has tier=web, b tier=db, c
// no tier. Named ports differ per pod, so a name resolves to different
// numbers: a: web=TCP/80, dns=UDP/81, sig=SCTP/80; b: web=TCP/81, dns=UDP/80;
// c: web=UDP/80 (the name, another protocol).
func NewWorld() World {
	var w World
	team := map[string]string{"x": "a", "y": "a", "z": "b"}
	for ni, ns := range NamespaceNames {
		w.Namespaces = append(w.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:   ns,
			Labels: map[string]string{corev1.LabelMetadataName: ns, "ns": ns, "team": team[ns]},
		}})
		for pi, name := range PodNames {
			labels := map[string]string{"pod": name}
			var ports []corev1.ContainerPort
			switch name {
			case "a":
				labels["tier"] = "web"
				ports = []corev1.ContainerPort{
					{Name: "web", ContainerPort: 80}, // TCP by default
					{Name: "dns", ContainerPort: 81, Protocol: corev1.ProtocolUDP},
					{Name: "sig", ContainerPort: 80, Protocol: corev1.ProtocolSCTP},
				}
			case "b":
				labels["tier"] = "db"
				ports = []corev1.ContainerPort{
					{Name: "web", ContainerPort: 81, Protocol: corev1.ProtocolTCP},
					{Name: "dns", ContainerPort: 80, Protocol: corev1.ProtocolUDP},
				}
			case "c":
				ports = []corev1.ContainerPort{{Name: "web", ContainerPort: 80, Protocol: corev1.ProtocolUDP}}
			}
			v4, v6 := Addrs(ni, pi)
			w.Pods = append(w.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:   "node",
					Containers: []corev1.Container{{Name: "main", Ports: ports}},
				},
				Status: corev1.PodStatus{
					Phase:  corev1.PodRunning,
					PodIP:  v4.String(),
					PodIPs: []corev1.PodIP{{IP: v4.String()}, {IP: v6.String()}},
				},
			})
		}
	}
	return w
}

// Addrs are the addresses of pod pi of namespace ni: 10.10.<ni>.<pi+1> and
// fd10::<ni>:<pi+1>.
func Addrs(ni, pi int) (v4, v6 netip.Addr) {
	v4 = netip.AddrFrom4([4]byte{10, 10, byte(ni), byte(pi + 1)})
	v6 = netip.MustParseAddr(fmt.Sprintf("fd10::%d:%d", ni, pi+1))
	return v4, v6
}

// Pod returns the pod ns/name.
func (w World) Pod(ns, name string) *corev1.Pod {
	for _, p := range w.Pods {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	return nil
}

// Scenario is a set of policies applied together; the truth table probes
// every cell under each.
type Scenario struct {
	Name     string
	Policies []*networkingv1.NetworkPolicy
}

// PolicyCount is the number of policies of all scenarios.
func PolicyCount(ss []Scenario) int {
	n := 0
	for _, s := range ss {
		n += len(s.Policies)
	}
	return n
}

// helpers to write policies tersely.

func np(ns, name string, sel metav1.LabelSelector, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, eg []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: sel, PolicyTypes: types, Ingress: in, Egress: eg},
	}
}

func all() metav1.LabelSelector { return metav1.LabelSelector{} }

func podLabel(v string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{"pod": v}}
}

func podSel(v string) *metav1.LabelSelector { s := podLabel(v); return &s }

func nsSel(k, v string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both        = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func proto(p corev1.Protocol) *corev1.Protocol { return &p }

func port(n int) *intstr.IntOrString { v := intstr.FromInt32(int32(n)); return &v }

func named(n string) *intstr.IntOrString { v := intstr.FromString(n); return &v }

func tcp(n int) networkingv1.NetworkPolicyPort { return networkingv1.NetworkPolicyPort{Port: port(n)} }

func udp(n int) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: port(n)}
}

func sctp(n int) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolSCTP), Port: port(n)}
}

func from(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return peers }

func ingress(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports}
}

func egress(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports}
}

func block(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// Scenarios are the truth table's cases: together they use every field of
// a NetworkPolicy.
func Scenarios() []Scenario {
	type in = networkingv1.NetworkPolicyIngressRule
	type eg = networkingv1.NetworkPolicyEgressRule
	type peer = networkingv1.NetworkPolicyPeer
	end := func(p networkingv1.NetworkPolicyPort, e int32) networkingv1.NetworkPolicyPort {
		p.EndPort = &e
		return p
	}
	return []Scenario{
		{Name: "no policy allows everything"},
		{Name: "deny all ingress in x (explicit policyTypes)", Policies: []*networkingv1.NetworkPolicy{
			np("x", "deny-ingress", all(), ingressOnly, nil, nil),
		}},
		{Name: "deny all egress in y, ingress untouched", Policies: []*networkingv1.NetworkPolicy{
			np("y", "deny-egress", all(), egressOnly, nil, nil),
		}},
		{Name: "implied policyTypes: ingress rules only isolate ingress; egress rules isolate both", Policies: []*networkingv1.NetworkPolicy{
			np("x", "implied-ingress", podLabel("a"), nil, []in{ingress(nil, tcp(80))}, nil),
			np("y", "implied-both", podLabel("b"), nil, nil, []eg{egress(from(peer{NamespaceSelector: nsSel("ns", "z")}))}),
		}},
		{Name: "union: deny-all plus allow-all ingress on x/a, plus an allow from y", Policies: []*networkingv1.NetworkPolicy{
			np("x", "deny", all(), ingressOnly, nil, nil),
			np("x", "allow-all-to-a", podLabel("a"), ingressOnly, []in{{}}, nil),
			np("x", "allow-y-to-b", podLabel("b"), nil, []in{ingress(from(peer{NamespaceSelector: nsSel("ns", "y")}))}, nil),
		}},
		{Name: "podSelector peer in the policy's namespace, several peers in one rule", Policies: []*networkingv1.NetworkPolicy{
			np("x", "b-and-c-to-a", podLabel("a"), ingressOnly, []in{ingress(from(peer{PodSelector: podSel("b")}, peer{PodSelector: podSel("c")}))}, nil),
			np("z", "empty-podselector-peer", podLabel("c"), ingressOnly, []in{ingress(from(peer{PodSelector: &metav1.LabelSelector{}}), udp(80))}, nil),
		}},
		{Name: "namespaceSelector alone, and with podSelector", Policies: []*networkingv1.NetworkPolicy{
			np("y", "team-a-to-a", podLabel("a"), ingressOnly, []in{ingress(from(peer{NamespaceSelector: nsSel("team", "a")}))}, nil),
			np("y", "z-pod-c-to-b", podLabel("b"), ingressOnly, []in{ingress(from(peer{NamespaceSelector: nsSel("ns", "z"), PodSelector: podSel("c")}))}, nil),
			np("y", "every-ns-pod-b-to-c", podLabel("c"), ingressOnly, []in{ingress(from(peer{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: podSel("b")}))}, nil),
		}},
		{Name: "matchExpressions: In, NotIn, Exists, DoesNotExist", Policies: []*networkingv1.NetworkPolicy{
			np("z", "tier-in", metav1.LabelSelector{MatchExpressions: expr("tier", metav1.LabelSelectorOpIn, "web", "db").MatchExpressions}, ingressOnly,
				[]in{ingress(from(peer{NamespaceSelector: expr("team", metav1.LabelSelectorOpNotIn, "b"), PodSelector: expr("tier", metav1.LabelSelectorOpExists)}))}, nil),
			np("z", "no-tier", *expr("tier", metav1.LabelSelectorOpDoesNotExist), ingressOnly,
				[]in{ingress(from(peer{NamespaceSelector: expr("ns", metav1.LabelSelectorOpIn, "z"), PodSelector: expr("tier", metav1.LabelSelectorOpNotIn, "web")}))}, nil),
		}},
		{Name: "ipBlock with except, both families", Policies: []*networkingv1.NetworkPolicy{
			np("y", "block-v4", all(), ingressOnly, []in{ingress(from(block("10.10.0.0/16", "10.10.2.0/24", "10.10.0.2/32")))}, nil),
			np("y", "block-v6", podLabel("a"), ingressOnly, []in{ingress(from(block("fd10::/64", "fd10::1:0/112")))}, nil),
		}},
		{Name: "ports by number and protocol, port without number, endPort", Policies: []*networkingv1.NetworkPolicy{
			np("x", "tcp80-udp81", podLabel("a"), ingressOnly, []in{ingress(nil, tcp(80), udp(81))}, nil),
			np("x", "all-udp-ports", podLabel("b"), ingressOnly, []in{ingress(nil, networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP)})}, nil),
			np("x", "sctp-range", podLabel("c"), ingressOnly, []in{ingress(nil, end(sctp(79), 80), end(tcp(81), 90))}, nil),
		}},
		{Name: "named ports on ingress resolve per pod", Policies: []*networkingv1.NetworkPolicy{
			np("y", "web", all(), ingressOnly, []in{ingress(nil, networkingv1.NetworkPolicyPort{Port: named("web")})}, nil),
			np("z", "dns-and-sig", all(), ingressOnly, []in{ingress(from(peer{NamespaceSelector: &metav1.LabelSelector{}}),
				networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: named("dns")},
				networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolSCTP), Port: named("sig")})}, nil),
		}},
		{Name: "named ports on egress resolve per destination pod", Policies: []*networkingv1.NetworkPolicy{
			np("x", "egress-web", all(), egressOnly, nil, []eg{egress(from(peer{NamespaceSelector: nsSel("ns", "y")}), networkingv1.NetworkPolicyPort{Port: named("web")})}),
			np("z", "egress-web-udp-block", podLabel("a"), egressOnly, nil, []eg{egress(from(block("10.10.0.0/16"), block("fd10::/64")),
				networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolUDP), Port: named("web")}, tcp(81))}),
		}},
		{Name: "egress: ipBlock except, namespaceSelector, ports", Policies: []*networkingv1.NetworkPolicy{
			np("z", "egress-mixed", all(), egressOnly, nil, []eg{
				egress(from(block("10.10.0.0/23", "10.10.1.0/25")), udp(80)),
				egress(from(peer{NamespaceSelector: nsSel("ns", "z"), PodSelector: podSel("a")}), end(tcp(80), 81), sctp(81)),
			}),
			np("y", "egress-to-x-sctp", podLabel("c"), egressOnly, nil, []eg{egress(from(peer{NamespaceSelector: nsSel("ns", "x")}), networkingv1.NetworkPolicyPort{Protocol: proto(corev1.ProtocolSCTP)})}),
		}},
		{Name: "ingress and egress together on one pod, and a selector that selects nobody", Policies: []*networkingv1.NetworkPolicy{
			np("x", "both-on-b", podLabel("b"), both,
				[]in{ingress(from(peer{PodSelector: podSel("a")}), tcp(81), udp(80))},
				[]eg{egress(from(peer{NamespaceSelector: nsSel("team", "b")}))}),
			np("x", "selects-nobody", podLabel("nobody"), both, nil, nil),
			np("y", "ports-no-peers-egress", podLabel("a"), egressOnly, nil, []eg{egress(nil, udp(81), sctp(80))}),
		}},
		{Name: "everything at once", Policies: []*networkingv1.NetworkPolicy{
			np("x", "deny-all-both", all(), both, nil, nil),
			np("x", "a-from-z", podLabel("a"), ingressOnly, []in{ingress(from(peer{NamespaceSelector: nsSel("ns", "z")}), tcp(80), sctp(80))}, nil),
			np("x", "b-to-y-web", podLabel("b"), egressOnly, nil, []eg{egress(from(peer{NamespaceSelector: nsSel("ns", "y")}), networkingv1.NetworkPolicyPort{Port: named("web")})}),
			np("z", "allow-egress-all", all(), egressOnly, nil, []eg{{}}),
			np("z", "deny-ingress-but-block", all(), ingressOnly, []in{ingress(from(block("fd10::/64", "fd10::/112")), udp(81))}, nil),
		}},
	}
}
