package gobgp

import (
	"net/netip"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/flatnet-io/flatnet/bgp"
)

// families are the address families every session carries.
var families = []bgppkt.Family{bgppkt.RF_IPv4_UC, bgppkt.RF_IPv6_UC}

func familyOf(p netip.Prefix) bgppkt.Family {
	if p.Addr().Is4() {
		return bgppkt.RF_IPv4_UC
	}
	return bgppkt.RF_IPv6_UC
}

func apiFamily(f bgppkt.Family) *api.Family {
	return &api.Family{Afi: api.Family_Afi(f.Afi()), Safi: api.Family_Safi(f.Safi())}
}

// advertPath is the locally originated path for a: origin IGP, next hop
// a.NextHop (in MP_REACH_NLRI for IPv6).
func advertPath(a bgp.Advert) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(a.Prefix)
	if err != nil {
		return nil, err
	}
	family := familyOf(a.Prefix)
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if family == bgppkt.RF_IPv4_UC {
		nh, err := bgppkt.NewPathAttributeNextHop(a.NextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		mp, err := bgppkt.NewPathAttributeMpReachNLRI(family, []bgppkt.PathNLRI{{NLRI: nlri}}, a.NextHop)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs, Age: time.Now().Unix()}, nil
}

// withdrawPath is the withdrawal of our path for p.
func withdrawPath(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{Family: familyOf(p), Nlri: nlri, Withdrawal: true}, nil
}

// prefixOf returns the prefix of a unicast path's NLRI.
func prefixOf(p *apiutil.Path) (netip.Prefix, bool) {
	if p == nil || (p.Family != bgppkt.RF_IPv4_UC && p.Family != bgppkt.RF_IPv6_UC) {
		return netip.Prefix{}, false
	}
	n, ok := p.Nlri.(*bgppkt.IPAddrPrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	return n.Prefix, true
}

// nextHopOf returns a path's next hop: NEXT_HOP for IPv4, the global
// address of MP_REACH_NLRI otherwise.
func nextHopOf(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgppkt.PathAttributeNextHop:
			return a.Value
		case *bgppkt.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

// lookups returns exact-match lookups for prefixes.
func lookups(prefixes []netip.Prefix) []*apiutil.LookupPrefix {
	out := make([]*apiutil.LookupPrefix, len(prefixes))
	for i, p := range prefixes {
		out[i] = &apiutil.LookupPrefix{Prefix: p.String(), LookupOption: apiutil.LOOKUP_EXACT}
	}
	return out
}

// byFamily splits prefixes by address family.
func byFamily(prefixes map[netip.Prefix]struct{}) map[bgppkt.Family][]netip.Prefix {
	out := map[bgppkt.Family][]netip.Prefix{}
	for p := range prefixes {
		out[familyOf(p)] = append(out[familyOf(p)], p)
	}
	return out
}
