package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// world indexes a Cluster for one Compute: pods by name, namespaces' labels,
// policies by namespace with their selectors parsed, and the sets built so far.
type world struct {
	pods       map[string]*pod // namespace/name
	selectable []*pod          // pods a selector or ipBlock may pick, by namespace/name
	nsLabels   map[string]labels.Set
	policies   map[string][]*netpol // by namespace, sorted by name
	sets       map[string]*Set
	warnings   []string
}

type pod struct {
	obj   *corev1.Pod
	addrs []netip.Addr // status and, for local pods, IPAM's
}

// namedPort returns the numbers p's containers give name for proto.
func (p *pod) namedPort(name string, proto Protocol) []uint16 {
	var out []uint16
	for _, c := range p.obj.Spec.Containers {
		for _, cp := range c.Ports {
			cpProto := TCP // the default
			ok := true
			if cp.Protocol != "" {
				cpProto, ok = protocolOf(&cp.Protocol)
			}
			if ok && cp.Name == name && cpProto == proto && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
				out = append(out, uint16(cp.ContainerPort))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

type netpol struct {
	obj             *networkingv1.NetworkPolicy
	podSelector     labels.Selector // nil: invalid, selects nothing
	ingress, egress bool            // policyTypes, explicit or implied
}

func (np *netpol) selects(p *pod) bool {
	return np.podSelector != nil && np.podSelector.Matches(labels.Set(p.obj.Labels))
}

func newWorld(c Cluster, local []LocalPod) *world {
	w := &world{
		pods:     map[string]*pod{},
		nsLabels: map[string]labels.Set{},
		policies: map[string][]*netpol{},
		sets:     map[string]*Set{},
	}
	for _, ns := range c.Namespaces {
		l := labels.Set{corev1.LabelMetadataName: ns.Name} // the API server sets it; fixtures may not
		for k, v := range ns.Labels {
			l[k] = v
		}
		w.nsLabels[ns.Name] = l
	}
	ipam := map[string][]netip.Addr{}
	for _, lp := range local {
		k := lp.Namespace + "/" + lp.Name
		ipam[k] = append(ipam[k], lp.Addrs...)
	}
	for _, o := range c.Pods {
		k := o.Namespace + "/" + o.Name
		p := &pod{obj: o}
		for _, ip := range o.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				p.addrs = append(p.addrs, a)
			}
		}
		if len(o.Status.PodIPs) == 0 && o.Status.PodIP != "" {
			if a, err := netip.ParseAddr(o.Status.PodIP); err == nil {
				p.addrs = append(p.addrs, a)
			}
		}
		if o.Spec.HostNetwork {
			p.addrs = nil // the node's: not the pod's own
		} else {
			p.addrs = sortedAddrs(append(p.addrs, ipam[k]...))
		}
		w.pods[k] = p
		ended := o.Status.Phase == corev1.PodSucceeded || o.Status.Phase == corev1.PodFailed
		if !o.Spec.HostNetwork && !ended && len(p.addrs) > 0 {
			w.selectable = append(w.selectable, p)
		}
	}
	slices.SortFunc(w.selectable, func(a, b *pod) int {
		return cmp.Or(cmp.Compare(a.obj.Namespace, b.obj.Namespace), cmp.Compare(a.obj.Name, b.obj.Name))
	})
	for _, o := range c.Policies {
		np := &netpol{obj: o}
		sel, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector)
		if err != nil {
			w.warn("%s/%s podSelector: %v: selects nothing", o.Namespace, o.Name, err)
		} else {
			np.podSelector = sel
		}
		np.ingress, np.egress = policyTypes(o)
		w.policies[o.Namespace] = append(w.policies[o.Namespace], np)
	}
	for _, nps := range w.policies {
		slices.SortFunc(nps, func(a, b *netpol) int { return cmp.Compare(a.obj.Name, b.obj.Name) })
	}
	return w
}

// policyTypes returns whether o isolates ingress and egress: its
// policyTypes, or when none are given, ingress always and egress when it
// has egress rules.
func policyTypes(o *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(o.Spec.PolicyTypes) == 0 {
		return true, len(o.Spec.Egress) > 0
	}
	for _, t := range o.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// namespaceLabels are the labels of namespace name; one not known yet has
// the label the API server gives every namespace.
func (w *world) namespaceLabels(name string) labels.Set {
	if l, ok := w.nsLabels[name]; ok {
		return l
	}
	return labels.Set{corev1.LabelMetadataName: name}
}

// compiledPeer is a Peer with what picks its pods (for named ports).
type compiledPeer struct {
	Peer
	key   string                // identifies what it matches
	picks func(p *pod) bool     // the pods it covers; nil for AnyPeer
	block func(netip.Addr) bool // Block: the addresses it covers
}

// peers compiles a rule's peers; no peers is one AnyPeer. A peer that
// cannot be understood is left out and reported: it matches nothing.
func (w *world) peers(where, policyNS string, specs []networkingv1.NetworkPolicyPeer) []compiledPeer {
	if len(specs) == 0 {
		return []compiledPeer{{Peer: Peer{Kind: AnyPeer}, key: "any", picks: func(*pod) bool { return true }}}
	}
	var out []compiledPeer
	for i, s := range specs {
		where := fmt.Sprintf("%s peer[%d]", where, i)
		if s.IPBlock != nil {
			if cp, ok := w.blockPeer(where, s.IPBlock); ok {
				out = append(out, cp)
			}
			continue
		}
		if s.PodSelector == nil && s.NamespaceSelector == nil {
			w.warn("%s: no selector and no ipBlock: left out", where)
			continue
		}
		podSel := labels.Everything()
		if s.PodSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(s.PodSelector)
			if err != nil {
				w.warn("%s podSelector: %v: left out", where, err)
				continue
			}
			podSel = sel
		}
		var inScope func(ns string) bool
		var scope string
		if s.NamespaceSelector != nil {
			nsSel, err := metav1.LabelSelectorAsSelector(s.NamespaceSelector)
			if err != nil {
				w.warn("%s namespaceSelector: %v: left out", where, err)
				continue
			}
			inScope = func(ns string) bool { return nsSel.Matches(w.namespaceLabels(ns)) }
			scope = "namespaces{" + nsSel.String() + "}"
		} else {
			inScope = func(ns string) bool { return ns == policyNS }
			scope = "namespace " + policyNS
		}
		picks := func(p *pod) bool {
			return inScope(p.obj.Namespace) && podSel.Matches(labels.Set(p.obj.Labels))
		}
		key := scope + " pods{" + podSel.String() + "}"
		name := nameOf("pods-", key)
		if _, ok := w.sets[name]; !ok {
			set := &Set{Name: name, Kind: PodSet, Selector: key}
			for _, p := range w.selectable {
				if picks(p) {
					set.Addrs = append(set.Addrs, p.addrs...)
				}
			}
			set.Addrs = sortedAddrs(set.Addrs)
			w.sets[name] = set
		}
		out = append(out, compiledPeer{Peer: Peer{Kind: PodSet, Set: name}, key: key, picks: picks})
	}
	return out
}

func (w *world) blockPeer(where string, b *networkingv1.IPBlock) (compiledPeer, bool) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		w.warn("%s ipBlock: %v: left out", where, err)
		return compiledPeer{}, false
	}
	cidr = cidr.Masked()
	var except []netip.Prefix
	for _, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			w.warn("%s ipBlock except: %v: left out, the block with it", where, err)
			return compiledPeer{}, false
		}
		ep = ep.Masked()
		if ep.Addr().Is4() == cidr.Addr().Is4() && ep.Bits() >= cidr.Bits() && cidr.Contains(ep.Addr()) {
			except = append(except, ep)
		}
	}
	slices.SortFunc(except, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	except = slices.Compact(except)
	contains := func(a netip.Addr) bool {
		if !cidr.Contains(a) {
			return false
		}
		return !slices.ContainsFunc(except, func(e netip.Prefix) bool { return e.Contains(a) })
	}
	key := fmt.Sprintf("ipBlock %s except %v", cidr, except)
	return compiledPeer{
		Peer:  Peer{Kind: Block, CIDR: cidr, Except: except},
		key:   key,
		picks: func(p *pod) bool { return slices.ContainsFunc(p.addrs, contains) },
		block: contains,
	}, true
}

// namedPortSet returns the name of the set of (address, protocol, port) of
// the pods peer covers that have port n, creating it.
func (w *world) namedPortSet(peer compiledPeer, n namedPort) string {
	key := fmt.Sprintf("%s port %s/%s", peer.key, n.proto, n.name)
	name := nameOf("ports-", key)
	if _, ok := w.sets[name]; ok {
		return name
	}
	set := &Set{Name: name, Kind: PodPortSet, Selector: key}
	for _, p := range w.selectable {
		if !peer.picks(p) {
			continue
		}
		ports := p.namedPort(n.name, n.proto)
		for _, a := range p.addrs {
			if peer.block != nil && !peer.block(a) {
				continue
			}
			for _, port := range ports {
				set.Tuples = append(set.Tuples, Tuple{Addr: a, Proto: n.proto, Port: port})
			}
		}
	}
	slices.SortFunc(set.Tuples, func(a, b Tuple) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	set.Tuples = slices.Compact(set.Tuples)
	w.sets[name] = set
	return name
}

// usedSets returns the sets some Allow of pods names, sorted by name.
func (w *world) usedSets(pods []PodRules) []Set {
	used := map[string]bool{}
	for _, p := range pods {
		for _, d := range []*Direction{p.Ingress, p.Egress} {
			if d == nil {
				continue
			}
			for _, a := range d.Allow {
				if a.Peer.Set != "" {
					used[a.Peer.Set] = true
				}
			}
		}
	}
	out := make([]Set, 0, len(used))
	for name := range used {
		out = append(out, *w.sets[name])
	}
	slices.SortFunc(out, func(a, b Set) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func (w *world) warn(format string, args ...any) {
	w.warnings = append(w.warnings, fmt.Sprintf(format, args...))
}
