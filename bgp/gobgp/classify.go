package gobgp

import (
	"net/netip"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/flatnet-io/flatnet/bgp"
)

// cause is why a route a peer announces is not accepted; causeNone: it is.
type cause uint8

const (
	causeNone cause = iota
	// Rejected by GoBGP before import policy, and counted by it (its
	// Adj-RIB-In "accepted" leaves them out): never in a rejection set.
	causeASLoop     // our AS in its AS path: a route of ours coming back
	causeOriginator // ORIGINATOR_ID is our router ID: reflected back to us
	// Rejected by import policy (policy.go).
	causeOwnBlock      // one of the blocks we announce, coming back
	causeOverlapsBlock // inside a block we announce, or containing one
	causeDefault       // the default route, from a peer without allowDefault
	causeOutsidePools  // outside the pod pools (mesh peers; explicit ones without import.allow)
	causeNotAllowed    // outside the peer's import.allow
	causeUnknownPeer   // from a peer the policy does not know (being removed)
)

// expected says whether a route rejected for c is one peers send as a
// matter of course (our own routes, reflected back), rather than a sign of a
// misconfigured or hostile peer.
func (c cause) expected() bool {
	return c == causeASLoop || c == causeOriginator || c == causeOwnBlock
}

func (c cause) String() string {
	return [...]string{
		causeNone:          "accepted",
		causeASLoop:        "our AS is in its AS path",
		causeOriginator:    "we originated it",
		causeOwnBlock:      "it is a block this node announces",
		causeOverlapsBlock: "it overlaps a block this node announces",
		causeDefault:       "it is the default route (import.allowDefault is off)",
		causeOutsidePools:  "it is outside the pod pools",
		causeNotAllowed:    "it is outside the peer's import.allow",
		causeUnknownPeer:   "the peer is not configured",
	}[c]
}

// reason is c as a bgp.PeerStatus.RejectedBy key.
func (c cause) reason() string {
	return [...]string{
		causeNone:          "",
		causeASLoop:        bgp.RejectLoop,
		causeOriginator:    bgp.RejectLoop,
		causeOwnBlock:      bgp.RejectOwnBlock,
		causeOverlapsBlock: bgp.RejectOverlapsBlock,
		causeDefault:       bgp.RejectDefault,
		causeOutsidePools:  bgp.RejectOutsidePools,
		causeNotAllowed:    bgp.RejectNotAllowed,
		causeUnknownPeer:   bgp.RejectUnknownPeer,
	}[c]
}

// classifier decides, as GoBGP does with the import policy built from the
// same policyInput (policy.go, whose order it follows), whether a route a
// peer announces is accepted, and if not why. It is immutable.
type classifier struct {
	in       policyInput
	asn      uint32
	routerID netip.Addr
	mesh     map[netip.Addr]bool
	explicit map[netip.Addr]bgp.ImportPolicy
}

func newClassifier(in policyInput, asn uint32, routerID netip.Addr) *classifier {
	c := &classifier{in: in, asn: asn, routerID: routerID, mesh: map[netip.Addr]bool{}, explicit: map[netip.Addr]bgp.ImportPolicy{}}
	for _, a := range in.mesh {
		c.mesh[a] = true
	}
	for _, p := range in.explicit {
		c.explicit[p.Address] = p.Import
	}
	return c
}

// classify returns why path (announced by a peer, for prefix) is not
// accepted, or causeNone.
func (c *classifier) classify(prefix netip.Prefix, path *apiutil.Path) cause {
	for _, a := range path.Attrs {
		switch a := a.(type) {
		case *bgppkt.PathAttributeAsPath:
			for _, seg := range a.Value {
				for _, as := range seg.GetAS() {
					if as == c.asn {
						return causeASLoop
					}
				}
			}
		case *bgppkt.PathAttributeOriginatorId:
			if path.PeerASN == c.asn && a.Value == c.routerID {
				return causeOriginator
			}
		}
	}
	return c.policy(path.PeerAddress, prefix)
}

// policy is the import policy's verdict on prefix from peer.
func (c *classifier) policy(peer netip.Addr, prefix netip.Prefix) cause {
	isDefault := prefix.Bits() == 0
	imp, explicit := c.explicit[peer]
	switch {
	case isDefault && explicit && imp.AllowDefault:
		return causeNone
	case !isDefault && overlapsAny(c.in.ownBlocks, prefix):
		for _, b := range c.in.ownBlocks {
			if b == prefix {
				return causeOwnBlock
			}
		}
		return causeOverlapsBlock
	case isDefault:
		return causeDefault
	case c.mesh[peer]:
		if withinAny(c.in.pools, prefix) {
			return causeNone
		}
		return causeOutsidePools
	case explicit && len(imp.Allow) > 0:
		if withinAny(imp.Allow, prefix) {
			return causeNone
		}
		return causeNotAllowed
	case explicit:
		if withinAny(c.in.pools, prefix) {
			return causeNone
		}
		return causeOutsidePools
	}
	return causeUnknownPeer
}

// withinAny says whether prefix is one of set or inside one, as within()
// matches it (never the default route).
func withinAny(set []netip.Prefix, prefix netip.Prefix) bool {
	for _, p := range set {
		if p.Addr().Is4() == prefix.Addr().Is4() && prefix.Bits() >= max(p.Bits(), 1) && p.Contains(prefix.Addr()) {
			return true
		}
	}
	return false
}

// overlapsAny says whether prefix is one of blocks, inside one, or contains
// one, as overlapping() matches it.
func overlapsAny(blocks []netip.Prefix, prefix netip.Prefix) bool {
	for _, b := range blocks {
		if b.Addr().Is4() == prefix.Addr().Is4() && b.Overlaps(prefix) {
			return true
		}
	}
	return false
}
