package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Cluster is what the API server says: every Pod (of every node: peers live
// anywhere), Namespace and NetworkPolicy, as informers hold them.
type Cluster struct {
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// LocalPod is an attachment of this node as IPAM recorded it: the pod it
// belongs to, its handle ("<containerID>/<ifname>", which names its host
// veth) and its addresses.
type LocalPod struct {
	Namespace string
	Name      string
	Handle    string
	Addrs     []netip.Addr
}

// Compute returns the Ruleset that enforces c's policies on the local pods.
func Compute(c Cluster, local []LocalPod) Ruleset {
	w := newWorld(c, local)
	var rs Ruleset
	for _, lp := range local {
		pr := PodRules{
			Veth:      VethOf(lp.Handle),
			Namespace: lp.Namespace,
			Name:      lp.Name,
			Addrs:     sortedAddrs(lp.Addrs),
		}
		p := w.pods[lp.Namespace+"/"+lp.Name]
		switch {
		case p == nil:
			// Not known yet: closed until it is.
			pr.Ingress, pr.Egress = &Direction{}, &Direction{}
			w.warn("pod %s/%s (%s) is not known yet: isolated, nothing allowed", lp.Namespace, lp.Name, pr.Veth)
		case p.obj.Spec.HostNetwork:
			continue
		default:
			if len(pr.Addrs) == 0 {
				pr.Addrs = p.addrs
			}
			pr.Ingress, pr.Egress = w.isolate(p)
		}
		rs.Pods = append(rs.Pods, pr)
	}
	slices.SortFunc(rs.Pods, func(a, b PodRules) int { return cmp.Compare(a.Veth, b.Veth) })
	rs.Sets = w.usedSets(rs.Pods)
	rs.Warnings = w.warnings
	return rs
}

// isolate returns p's ingress and egress: nil where no policy isolates it.
func (w *world) isolate(p *pod) (ingress, egress *Direction) {
	for _, np := range w.policies[p.obj.Namespace] {
		if !np.selects(p) {
			continue
		}
		id := np.obj.Namespace + "/" + np.obj.Name
		if np.ingress {
			if ingress == nil {
				ingress = &Direction{}
			}
			ingress.Policies = append(ingress.Policies, id)
			for i, r := range np.obj.Spec.Ingress {
				ingress.Allow = append(ingress.Allow, w.ingressAllows(np, i, r.From, r.Ports, p)...)
			}
		}
		if np.egress {
			if egress == nil {
				egress = &Direction{}
			}
			egress.Policies = append(egress.Policies, id)
			for i, r := range np.obj.Spec.Egress {
				egress.Allow = append(egress.Allow, w.egressAllows(np, i, r.To, r.Ports)...)
			}
		}
	}
	return ingress, egress
}

// ingressAllows compiles one ingress rule for the isolated pod p: named
// ports resolve against p itself.
func (w *world) ingressAllows(np *netpol, idx int, from []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, p *pod) []Allow {
	id := np.obj.Namespace + "/" + np.obj.Name
	where := fmt.Sprintf("%s ingress[%d]", id, idx)
	numeric, named := w.ports(where, ports)
	for _, n := range named {
		for _, port := range p.namedPort(n.name, n.proto) {
			numeric = append(numeric, PortRange{Proto: n.proto, First: port, Last: port})
		}
	}
	var allowPorts []PortRange
	if len(ports) > 0 {
		if len(numeric) == 0 {
			return nil // every port resolved to nothing
		}
		allowPorts = normalizePorts(numeric)
	}
	var out []Allow
	for _, peer := range w.peers(where, np.obj.Namespace, from) {
		out = append(out, Allow{Policy: id, Rule: idx, Peer: peer.Peer, Ports: allowPorts})
	}
	return out
}

// egressAllows compiles one egress rule: numeric ports apply to every peer;
// a named port becomes a set of (address, protocol, port) of the pods the
// peer covers.
func (w *world) egressAllows(np *netpol, idx int, to []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) []Allow {
	id := np.obj.Namespace + "/" + np.obj.Name
	where := fmt.Sprintf("%s egress[%d]", id, idx)
	numeric, named := w.ports(where, ports)
	peers := w.peers(where, np.obj.Namespace, to)
	var out []Allow
	if len(ports) == 0 || len(numeric) > 0 {
		var allowPorts []PortRange
		if len(ports) > 0 {
			allowPorts = normalizePorts(numeric)
		}
		for _, peer := range peers {
			out = append(out, Allow{Policy: id, Rule: idx, Peer: peer.Peer, Ports: allowPorts})
		}
	}
	for _, peer := range peers {
		for _, n := range named {
			name := w.namedPortSet(peer, n)
			out = append(out, Allow{Policy: id, Rule: idx, Peer: Peer{Kind: PodPortSet, Set: name}})
		}
	}
	return out
}

// namedPort is a port given by name in a policy.
type namedPort struct {
	name  string
	proto Protocol
}

// ports splits a rule's ports into numeric ranges and names. A port that
// cannot be understood is left out and reported: it matches nothing.
func (w *world) ports(where string, ports []networkingv1.NetworkPolicyPort) (numeric []PortRange, named []namedPort) {
	for i, p := range ports {
		proto, ok := protocolOf(p.Protocol)
		if !ok {
			w.warn("%s port[%d]: protocol %q is not TCP, UDP or SCTP: left out", where, i, *p.Protocol)
			continue
		}
		switch {
		case p.Port == nil:
			numeric = append(numeric, PortRange{Proto: proto})
		case p.Port.Type == intstr.String:
			named = append(named, namedPort{name: p.Port.StrVal, proto: proto})
		default:
			first := p.Port.IntVal
			last := first
			if p.EndPort != nil {
				last = *p.EndPort
			}
			if first < 1 || first > 65535 || last < first || last > 65535 {
				w.warn("%s port[%d]: %d..%d is not a port range: left out", where, i, first, last)
				continue
			}
			numeric = append(numeric, PortRange{Proto: proto, First: uint16(first), Last: uint16(last)})
		}
	}
	return numeric, named
}

func protocolOf(p *corev1.Protocol) (Protocol, bool) {
	if p == nil {
		return TCP, true
	}
	switch *p {
	case corev1.ProtocolTCP:
		return TCP, true
	case corev1.ProtocolUDP:
		return UDP, true
	case corev1.ProtocolSCTP:
		return SCTP, true
	}
	return 0, false
}

// normalizePorts sorts ranges and drops those another range of the same
// protocol covers entirely.
func normalizePorts(in []PortRange) []PortRange {
	rs := slices.Clone(in)
	slices.SortFunc(rs, func(a, b PortRange) int {
		if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		if c := cmp.Compare(a.First, b.First); c != 0 {
			return c
		}
		return cmp.Compare(b.Last, a.Last) // wider first
	})
	var out []PortRange
	for _, r := range rs {
		covered := slices.ContainsFunc(out, func(o PortRange) bool {
			return o.Proto == r.Proto && (o.AllPorts() || (!r.AllPorts() && o.First <= r.First && r.Last <= o.Last))
		})
		if !covered {
			out = append(out, r)
		}
	}
	return out
}

func sortedAddrs(in []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
