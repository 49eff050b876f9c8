// Package mesh is the node-to-node BGP mesh: the registry in which every
// flatnet node records its name, BGP addresses and ASN, and the derivation of
// a node's mesh peers from it. The registry is the datastore's: a directory of
// files here (FileRegistry); the Kubernetes datastore feeds it from Node
// objects. It must not speak BGP itself: it only says whom to peer with.
package mesh

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/flatnet-io/flatnet/bgp"
)

// Node is one flatnet node as its mesh peers see it.
type Node struct {
	Name string     `json:"name"`
	IPv4 netip.Addr `json:"ipv4,omitzero"` // BGP address and IPv4 next hop
	IPv6 netip.Addr `json:"ipv6,omitzero"` // IPv6 next hop; the session address when IPv4 is unset
	ASN  uint32     `json:"asn"`
}

// Validate reports what makes n unusable as a mesh member.
func (n Node) Validate() error {
	switch {
	case n.Name == "":
		return fmt.Errorf("mesh node: empty name")
	case !n.IPv4.IsValid() && !n.IPv6.IsValid():
		return fmt.Errorf("mesh node %s: no address", n.Name)
	case n.IPv4.IsValid() && !n.IPv4.Is4():
		return fmt.Errorf("mesh node %s: ipv4 %s is not IPv4", n.Name, n.IPv4)
	case n.IPv6.IsValid() && (!n.IPv6.Is6() || n.IPv6.Is4In6()):
		return fmt.Errorf("mesh node %s: ipv6 %s is not IPv6", n.Name, n.IPv6)
	case n.ASN == 0:
		return fmt.Errorf("mesh node %s: ASN 0", n.Name)
	}
	return nil
}

// Registry is where nodes find each other.
type Registry interface {
	// Register records n, replacing an earlier record of the same name.
	Register(ctx context.Context, n Node) error
	// Watch calls fn with every registered node, sorted by name: once at
	// once, then whenever the set changes, until ctx is done. Calls are
	// sequential.
	Watch(ctx context.Context, fn func([]Node))
}

// PeerNamePrefix starts the name of every mesh peer: "mesh-" and the node's name.
const PeerNamePrefix = "mesh-"

// Peers returns self's mesh peers: one session with every other valid node
// that has an address of a family self has too (IPv4 preferred), sorted by
// name. Each is template with the node's name, address and ASN filled in.
func Peers(self Node, nodes []Node, template bgp.Peer) []bgp.Peer {
	var peers []bgp.Peer
	for _, n := range nodes {
		if n.Name == self.Name || n.Validate() != nil {
			continue
		}
		var addr netip.Addr
		switch {
		case self.IPv4.IsValid() && n.IPv4.IsValid():
			addr = n.IPv4
		case self.IPv6.IsValid() && n.IPv6.IsValid():
			addr = n.IPv6
		default:
			continue // no common family
		}
		p := template
		p.Name = PeerNamePrefix + n.Name
		p.Address = addr
		p.ASN = n.ASN
		p.Mesh = true
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b bgp.Peer) int { return strings.Compare(a.Name, b.Name) })
	return peers
}
