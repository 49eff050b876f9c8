// Package policytest holds an oracle for NetworkPolicy: a second, simple
// implementation that decides whether one connection is allowed straight
// from the API objects, written apart from package policy (its own label
// matching, its own CIDR arithmetic, no sets) so that tests can compare the
// two, and what the kernel does with both.
//
// It is for tests only and must not back a real agent.
package policytest

import (
	"net"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one end of a connection.
type Endpoint struct {
	Pod  *corev1.Pod // nil: not a pod
	Addr netip.Addr  // the address the packets carry
	// Node marks the node the other end runs on: its own traffic to its
	// pods is never judged.
	Node bool
}

// Oracle decides connections under Policies, with Namespaces' labels.
type Oracle struct {
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Allowed says whether a new connection from src to dst's port over proto
// is allowed: src's egress and dst's ingress both let it through.
func (o Oracle) Allowed(src, dst Endpoint, proto corev1.Protocol, port int32) bool {
	if src.Node {
		return true // node → local pod: kubelet probes and the like
	}
	if src.Pod != nil && dst.Pod != nil && src.Pod.Namespace == dst.Pod.Namespace && src.Pod.Name == dst.Pod.Name {
		return true // a pod's traffic to itself never leaves it
	}
	return o.direction(src, dst, proto, port, false) && o.direction(dst, src, proto, port, true)
}

// direction judges the connection at end "self" (the source for egress,
// the destination for ingress), with "other" the far end.
func (o Oracle) direction(self, other Endpoint, proto corev1.Protocol, port int32, ingress bool) bool {
	if self.Pod == nil || self.Pod.Spec.HostNetwork {
		return true
	}
	// dst is whose named ports count.
	dst := other
	if ingress {
		dst = self
	}
	isolated := false
	for _, np := range o.Policies {
		if np.Namespace != self.Pod.Namespace || !matches(&np.Spec.PodSelector, self.Pod.Labels) {
			continue
		}
		if !hasType(np, ingress) {
			continue
		}
		isolated = true
		if ingress {
			for _, r := range np.Spec.Ingress {
				if o.anyPeer(np.Namespace, r.From, other) && anyPort(r.Ports, dst, proto, port) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if o.anyPeer(np.Namespace, r.To, other) && anyPort(r.Ports, dst, proto, port) {
					return true
				}
			}
		}
	}
	return !isolated
}

func hasType(np *networkingv1.NetworkPolicy, ingress bool) bool {
	want := networkingv1.PolicyTypeEgress
	if ingress {
		want = networkingv1.PolicyTypeIngress
	}
	if len(np.Spec.PolicyTypes) == 0 {
		return ingress || len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		if t == want {
			return true
		}
	}
	return false
}

func (o Oracle) anyPeer(policyNS string, peers []networkingv1.NetworkPolicyPeer, e Endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if o.peer(policyNS, p, e) {
			return true
		}
	}
	return false
}

func (o Oracle) peer(policyNS string, p networkingv1.NetworkPolicyPeer, e Endpoint) bool {
	if p.IPBlock != nil {
		ip := net.IP(e.Addr.AsSlice())
		_, cidr, err := net.ParseCIDR(p.IPBlock.CIDR)
		if err != nil || !cidr.Contains(ip) {
			return false
		}
		for _, ex := range p.IPBlock.Except {
			if _, n, err := net.ParseCIDR(ex); err == nil && n.Contains(ip) {
				return false
			}
		}
		return true
	}
	if e.Pod == nil || e.Pod.Spec.HostNetwork || (p.PodSelector == nil && p.NamespaceSelector == nil) {
		return false
	}
	if p.NamespaceSelector == nil {
		if e.Pod.Namespace != policyNS {
			return false
		}
	} else if !matches(p.NamespaceSelector, o.namespaceLabels(e.Pod.Namespace)) {
		return false
	}
	return p.PodSelector == nil || matches(p.PodSelector, e.Pod.Labels)
}

func (o Oracle) namespaceLabels(name string) map[string]string {
	for _, ns := range o.Namespaces {
		if ns.Name == name {
			l := map[string]string{corev1.LabelMetadataName: name}
			for k, v := range ns.Labels {
				l[k] = v
			}
			return l
		}
	}
	return map[string]string{corev1.LabelMetadataName: name}
}

func anyPort(ports []networkingv1.NetworkPolicyPort, dst Endpoint, proto corev1.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		want := corev1.ProtocolTCP
		if p.Protocol != nil {
			want = *p.Protocol
		}
		if want != proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.Int:
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if p.Port.IntVal <= port && port <= end {
				return true
			}
		case dst.Pod != nil:
			for _, c := range dst.Pod.Spec.Containers {
				for _, cp := range c.Ports {
					cpProto := cp.Protocol
					if cpProto == "" {
						cpProto = corev1.ProtocolTCP
					}
					if cp.Name == p.Port.StrVal && cpProto == proto && cp.ContainerPort == port {
						return true
					}
				}
			}
		}
	}
	return false
}

// matches is a label selector's meaning, spelt out: every matchLabels pair
// and every expression hold.
func matches(sel *metav1.LabelSelector, l map[string]string) bool {
	for k, v := range sel.MatchLabels {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range sel.MatchExpressions {
		v, has := l[e.Key]
		in := false
		for _, x := range e.Values {
			in = in || (has && v == x)
		}
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			if !in {
				return false
			}
		case metav1.LabelSelectorOpNotIn:
			if in {
				return false
			}
		case metav1.LabelSelectorOpExists:
			if !has {
				return false
			}
		case metav1.LabelSelectorOpDoesNotExist:
			if has {
				return false
			}
		default:
			return false
		}
	}
	return true
}
