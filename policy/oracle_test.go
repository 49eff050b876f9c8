package policy_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/policy/policytest"
	corev1 "k8s.io/api/core/v1"
)

// localPods makes every pod of the world a pod of this node, with handle
// "<ns>-<name>/eth0" and its status addresses.
func localPods(w policytest.World) []policy.LocalPod {
	var out []policy.LocalPod
	for _, p := range w.Pods {
		var addrs []netip.Addr
		for _, ip := range p.Status.PodIPs {
			addrs = append(addrs, netip.MustParseAddr(ip.IP))
		}
		out = append(out, policy.LocalPod{Namespace: p.Namespace, Name: p.Name, Handle: handleOf(p), Addrs: addrs})
	}
	return out
}

func handleOf(p *corev1.Pod) string { return p.Namespace + "-" + p.Name + "/eth0" }

// decide interprets a Ruleset as the kernel's ruleset does for a new
// connection from src to dst's port: the source pod's egress, then the
// destination pod's ingress. A nil pod is not local (or not a pod).
func decide(rs policy.Ruleset, srcVeth string, src netip.Addr, dstVeth string, dst netip.Addr, proto policy.Protocol, port uint16) bool {
	if p, ok := rs.Pod(srcVeth); ok && p.Egress != nil && !allows(rs, p.Egress, dst, proto, port) {
		return false
	}
	if p, ok := rs.Pod(dstVeth); ok && p.Ingress != nil && !allows(rs, p.Ingress, src, proto, port) {
		return false
	}
	return true
}

// allows says whether one Allow of d lets (peer, proto, port) through.
func allows(rs policy.Ruleset, d *policy.Direction, peer netip.Addr, proto policy.Protocol, port uint16) bool {
	for _, a := range d.Allow {
		portOK := a.Ports == nil || slices.ContainsFunc(a.Ports, func(r policy.PortRange) bool {
			return r.Proto == proto && (r.AllPorts() || (r.First <= port && port <= r.Last))
		})
		switch a.Peer.Kind {
		case policy.AnyPeer:
			if portOK {
				return true
			}
		case policy.PodSet:
			s, _ := rs.Set(a.Peer.Set)
			if portOK && slices.Contains(s.Addrs, peer) {
				return true
			}
		case policy.Block:
			in := a.Peer.CIDR.Contains(peer) && !slices.ContainsFunc(a.Peer.Except, func(e netip.Prefix) bool { return e.Contains(peer) })
			if portOK && in {
				return true
			}
		case policy.PodPortSet:
			s, _ := rs.Set(a.Peer.Set)
			if slices.Contains(s.Tuples, policy.Tuple{Addr: peer, Proto: proto, Port: port}) {
				return true
			}
		}
	}
	return false
}

func protocolOf(p corev1.Protocol) policy.Protocol {
	return map[corev1.Protocol]policy.Protocol{corev1.ProtocolTCP: policy.TCP, corev1.ProtocolUDP: policy.UDP, corev1.ProtocolSCTP: policy.SCTP}[p]
}

// TestComputeAgreesWithOracle runs the truth table's scenarios through
// Compute, interprets the Ruleset, and compares every cell with the oracle:
// the model's half of the kernel truth table, without a kernel.
func TestComputeAgreesWithOracle(t *testing.T) {
	w := policytest.NewWorld()
	cells := 0
	for _, sc := range policytest.Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			rs := policy.Compute(policy.Cluster{Pods: w.Pods, Namespaces: w.Namespaces, Policies: sc.Policies}, localPods(w))
			if len(rs.Warnings) > 0 {
				t.Errorf("warnings: %q", rs.Warnings)
			}
			o := policytest.Oracle{Namespaces: w.Namespaces, Policies: sc.Policies}
			var diffs []string
			allowed := 0
			for _, fam := range []int{4, 6} {
				for _, src := range append(slices.Clone(w.Pods), nil) { // nil: the node
					for _, dst := range w.Pods {
						for _, proto := range policytest.Protocols {
							for _, port := range policytest.Ports {
								cells++
								sAddr, dAddr := addrOf(src, fam), addrOf(dst, fam)
								want := o.Allowed(policytest.Endpoint{Pod: src, Addr: sAddr, Node: src == nil},
									policytest.Endpoint{Pod: dst, Addr: dAddr}, proto, port)
								var got bool
								switch src {
								case nil, dst:
									got = true // never judged: the node's own traffic, a pod's to itself
								default:
									got = decide(rs, policy.VethOf(handleOf(src)), sAddr, policy.VethOf(handleOf(dst)), dAddr, protocolOf(proto), uint16(port))
								}
								if want {
									allowed++
								}
								if got != want {
									diffs = append(diffs, fmt.Sprintf("IPv%d %s → %s %s/%d: model %v, oracle %v", fam, name(src), name(dst), proto, port, got, want))
								}
							}
						}
					}
				}
			}
			t.Logf("%d of %d cells allowed", allowed, 2*10*9*len(policytest.Protocols)*len(policytest.Ports))
			if len(diffs) > 0 {
				t.Errorf("%d cells differ:\n%s", len(diffs), strings.Join(diffs, "\n"))
			}
		})
	}
	t.Logf("%d policies, %d cells", policytest.PolicyCount(policytest.Scenarios()), cells)
}

func addrOf(p *corev1.Pod, fam int) netip.Addr {
	if p == nil {
		if fam == 4 {
			return netip.MustParseAddr("10.255.0.1")
		}
		return netip.MustParseAddr("fd10:ffff::1")
	}
	for _, ip := range p.Status.PodIPs {
		a := netip.MustParseAddr(ip.IP)
		if a.Is4() == (fam == 4) {
			return a
		}
	}
	panic("no address")
}

func name(p *corev1.Pod) string {
	if p == nil {
		return "node"
	}
	return p.Namespace + "/" + p.Name
}
