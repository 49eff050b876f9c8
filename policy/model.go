package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/flatnet-io/flatnet/wellknown"
)

// Ruleset is the policy one node enforces: a PodRules per local pod and the
// address sets their rules name. Compute builds it sorted, so two Rulesets of
// the same inputs are equal.
type Ruleset struct {
	Pods []PodRules // by Veth
	Sets []Set      // by Name; every set some rule names, and no other
	// Warnings name what was left out (an invalid selector or CIDR in a
	// policy: that peer matches nothing) and local pods whose Pod is not
	// known (isolated, nothing allowed).
	Warnings []string
}

// Pod returns the rules of the pod behind veth.
func (rs Ruleset) Pod(veth string) (PodRules, bool) {
	for _, p := range rs.Pods {
		if p.Veth == veth {
			return p, true
		}
	}
	return PodRules{}, false
}

// Set returns the set called name.
func (rs Ruleset) Set(name string) (Set, bool) {
	for _, s := range rs.Sets {
		if s.Name == name {
			return s, true
		}
	}
	return Set{}, false
}

// PodRules is what one local pod's traffic must obey.
type PodRules struct {
	Veth      string // the host end of the pod's veth: the key
	Namespace string
	Name      string
	Addrs     []netip.Addr
	// Ingress and Egress are nil when that direction is not isolated:
	// everything is allowed.
	Ingress *Direction
	Egress  *Direction
}

// Direction is an isolated direction: only what Allow lists passes.
type Direction struct {
	Policies []string // the policies (namespace/name) that isolate it
	Allow    []Allow  // in policy order, then rule order
}

// Allow lets traffic with Peer on Ports through. Peer is the source for
// ingress, the destination for egress.
type Allow struct {
	Policy string // namespace/name
	Rule   int    // index into the policy's spec.ingress or spec.egress
	Peer   Peer
	// Ports are the destination ports allowed; nil allows every protocol
	// and port. Never empty but non-nil: a rule whose ports all resolve to
	// nothing yields no Allow.
	Ports []PortRange
}

// PeerKind says how a Peer matches an address.
type PeerKind uint8

const (
	// AnyPeer matches every address.
	AnyPeer PeerKind = iota
	// PodSet matches the addresses of the pods in Set (a Set with Addrs).
	PodSet
	// Block matches CIDR less Except.
	Block
	// PodPortSet matches (address, protocol, port) in Set (a Set with
	// Tuples): egress to named ports, resolved per destination pod. Its
	// Allow has nil Ports.
	PodPortSet
)

func (k PeerKind) String() string {
	switch k {
	case AnyPeer:
		return "any"
	case PodSet:
		return "pods"
	case Block:
		return "ipBlock"
	case PodPortSet:
		return "named-port pods"
	}
	return fmt.Sprintf("PeerKind(%d)", uint8(k))
}

// Peer is one side of an allowed connection.
type Peer struct {
	Kind   PeerKind
	Set    string         // PodSet, PodPortSet: the Set's name
	CIDR   netip.Prefix   // Block
	Except []netip.Prefix // Block: inside CIDR, sorted
}

// Protocol is an IP protocol number a policy may name.
type Protocol uint8

const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// PortRange is First..Last of one protocol; First 0 means every port.
type PortRange struct {
	Proto       Protocol
	First, Last uint16
}

// AllPorts says whether r covers every port of its protocol.
func (r PortRange) AllPorts() bool { return r.First == 0 }

func (r PortRange) String() string {
	switch {
	case r.AllPorts():
		return r.Proto.String()
	case r.First == r.Last:
		return fmt.Sprintf("%s/%d", r.Proto, r.First)
	}
	return fmt.Sprintf("%s/%d-%d", r.Proto, r.First, r.Last)
}

// Set is a named set of pod addresses, or of (address, protocol, port)
// tuples for named ports. Its name derives from what selects its members,
// never from the members: pods coming and going change a set's elements,
// not the rules that name it.
type Set struct {
	Name string
	Kind PeerKind // PodSet: Addrs; PodPortSet: Tuples
	// Selector says in words what picks the members, for people.
	Selector string
	Addrs    []netip.Addr // sorted
	Tuples   []Tuple      // sorted
}

// Tuple is a destination pod's address with a port it names.
type Tuple struct {
	Addr  netip.Addr
	Proto Protocol
	Port  uint16
}

// VethOf is the host veth of the attachment with IPAM handle
// "<containerID>/<ifname>": the CNI plugin's name for it (cni.HostVethName),
// which the agent knows from the allocation before the veth exists.
func VethOf(handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return wellknown.HostVethPrefix + hex.EncodeToString(sum[:6])
}

// nameOf derives a set's name from its key: prefix and 12 hex digits.
func nameOf(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	return prefix + hex.EncodeToString(sum[:6])
}
