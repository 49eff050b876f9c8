package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/wellknown"
)

// TableName is flatnet's table (family inet); nothing else is ever touched.
const TableName = wellknown.PolicyTable

// Names of the fixed objects of the table.
const (
	forwardChain = "forward"
	inputChain   = "input"
	ingressMap   = "pod-ingress"
	egressMap    = "pod-egress"
)

// tableComment marks the table as flatnet's.
const tableComment = "flatnet: Kubernetes NetworkPolicy of this node's pods; owned by flatnet-agent"

// table is the content of the table, wanted or read: what the reconciler
// compares. Rules are compared by comment only (it carries a hash of the
// rule), so a table read from the kernel has rules with comments and no text.
type table struct {
	chains map[string]*chain
	sets   map[string]*set
	maps   map[string]*set // elements keyed by ifname, value a verdict
}

type chain struct {
	hook    string // "forward", "input"; "" for a regular chain
	comment string
	rules   []rule
}

type rule struct {
	text    string // empty when read from the kernel
	comment string // identifies the rule: ends in a hash of chain and text
}

type set struct {
	typ     string // nft type, e.g. "ipv4_addr" or "ifname : verdict"
	comment string
	elems   map[string]element // by key, joined with " . "
}

type element struct {
	key   []string
	value []string // maps only
}

func newTable() *table {
	return &table{chains: map[string]*chain{}, sets: map[string]*set{}, maps: map[string]*set{}}
}

// render turns a Ruleset into the table that enforces it.
func render(rs policy.Ruleset) *table {
	t := newTable()
	t.maps[ingressMap] = &set{typ: "ifname : verdict", comment: "a local pod's host veth → its ingress chain", elems: map[string]element{}}
	t.maps[egressMap] = &set{typ: "ifname : verdict", comment: "a local pod's host veth → its egress chain", elems: map[string]element{}}
	t.addChain(forwardChain, "forward", "pods' traffic through this node",
		rule{text: "ct state established,related accept", comment: "replies of allowed connections"},
		rule{text: "iifname vmap @" + egressMap, comment: "egress of local pods"},
		rule{text: "oifname vmap @" + ingressMap, comment: "ingress of local pods"},
	)
	t.addChain(inputChain, "input", "pods' traffic to this node",
		rule{text: "ct state established,related accept", comment: "replies of allowed connections"},
		rule{text: "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept", comment: "neighbour discovery with the pod's gateway"},
		rule{text: "iifname vmap @" + egressMap, comment: "egress of local pods to this node"},
	)
	for _, s := range rs.Sets {
		for _, fam := range []family{v4, v6} {
			ns := &set{comment: truncate(s.Selector, 128), elems: map[string]element{}}
			if s.Kind == policy.PodPortSet {
				ns.typ = fam.addrType + " . inet_proto . inet_service"
				for _, tu := range s.Tuples {
					if tu.Addr.Is4() == (fam == v4) {
						ns.add(element{key: []string{tu.Addr.String(), tu.Proto.String(), fmt.Sprint(tu.Port)}})
					}
				}
			} else {
				ns.typ = fam.addrType
				for _, a := range s.Addrs {
					if a.Is4() == (fam == v4) {
						ns.add(element{key: []string{a.String()}})
					}
				}
			}
			t.sets[setName(s.Name, fam)] = ns
		}
	}
	for _, p := range rs.Pods {
		who := p.Namespace + "/" + p.Name
		if p.Ingress != nil {
			name := "ingress-" + p.Veth
			t.addChain(name, "", "ingress of "+who, podRules(name, p.Ingress, true)...)
			t.maps[ingressMap].add(element{key: []string{p.Veth}, value: []string{"jump " + name}})
		}
		if p.Egress != nil {
			name := "egress-" + p.Veth
			t.addChain(name, "", "egress of "+who, podRules(name, p.Egress, false)...)
			t.maps[egressMap].add(element{key: []string{p.Veth}, value: []string{"jump " + name}})
		}
	}
	return t
}

// addChain adds a chain; each rule's comment gets the hash that identifies it.
func (t *table) addChain(name, hook, comment string, rules ...rule) {
	c := &chain{hook: hook, comment: truncate(comment, 128)}
	for _, r := range rules {
		sum := sha256.Sum256([]byte(name + "\x00" + r.text + "\x00" + r.comment))
		tag := " #" + hex.EncodeToString(sum[:4])
		r.comment = truncate(r.comment, 128-len(tag)) + tag
		c.rules = append(c.rules, r)
	}
	t.chains[name] = c
}

func (s *set) add(e element) { s.elems[strings.Join(e.key, " . ")] = e }

type family struct {
	name     string // "v4", "v6"
	match    string // "ip", "ip6"
	addrType string
}

var (
	v4 = family{"v4", "ip", "ipv4_addr"}
	v6 = family{"v6", "ip6", "ipv6_addr"}
)

func setName(name string, f family) string { return name + "-" + f.name }

// podRules are the rules of one isolated direction of a pod: one per
// allowed peer, family and protocol, then the default deny.
func podRules(chainName string, d *policy.Direction, ingress bool) []rule {
	dir, verdict, addr := "egress", "return", "daddr"
	if ingress {
		dir, verdict, addr = "ingress", "accept", "saddr"
	}
	var out []rule
	for _, a := range d.Allow {
		comment := fmt.Sprintf("%s %s[%d]", a.Policy, dir, a.Rule)
		var peers []string // address matches, one rule each
		switch a.Peer.Kind {
		case policy.AnyPeer:
			peers = []string{""}
		case policy.PodSet:
			for _, f := range []family{v4, v6} {
				peers = append(peers, fmt.Sprintf("%s %s @%s ", f.match, addr, setName(a.Peer.Set, f)))
			}
		case policy.PodPortSet:
			for _, f := range []family{v4, v6} {
				peers = append(peers, fmt.Sprintf("%s %s . meta l4proto . th dport @%s ", f.match, addr, setName(a.Peer.Set, f)))
			}
		case policy.Block:
			f := v6
			if a.Peer.CIDR.Addr().Is4() {
				f = v4
			}
			m := fmt.Sprintf("%s %s %s ", f.match, addr, a.Peer.CIDR)
			if len(a.Peer.Except) > 0 {
				var ex []string
				for _, e := range a.Peer.Except {
					ex = append(ex, e.String())
				}
				m += fmt.Sprintf("%s %s != { %s } ", f.match, addr, strings.Join(ex, ", "))
			}
			peers = []string{m}
		}
		for _, peer := range peers {
			for _, ports := range portMatches(a.Ports) {
				out = append(out, rule{text: peer + ports + "counter " + verdict, comment: comment})
			}
		}
	}
	out = append(out, rule{text: "counter drop", comment: "default deny: " + strings.Join(d.Policies, ", ")})
	return out
}

// portMatches renders ports as one match per protocol; nil ports is one
// empty match (every protocol and port).
func portMatches(ports []policy.PortRange) []string {
	if ports == nil {
		return []string{""}
	}
	var protos []policy.Protocol
	byProto := map[policy.Protocol][]string{}
	all := map[policy.Protocol]bool{}
	for _, r := range ports {
		if !slices.Contains(protos, r.Proto) {
			protos = append(protos, r.Proto)
		}
		switch {
		case r.AllPorts():
			all[r.Proto] = true
		case r.First == r.Last:
			byProto[r.Proto] = append(byProto[r.Proto], fmt.Sprint(r.First))
		default:
			byProto[r.Proto] = append(byProto[r.Proto], fmt.Sprintf("%d-%d", r.First, r.Last))
		}
	}
	var out []string
	for _, p := range protos {
		m := "meta l4proto " + p.String() + " "
		switch ps := byProto[p]; {
		case all[p]:
		case len(ps) == 1:
			m += "th dport " + ps[0] + " "
		default:
			m += "th dport { " + strings.Join(ps, ", ") + " } "
		}
		out = append(out, m)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
