package gobgp

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/osrg/gobgp/v4/api"
	"google.golang.org/protobuf/proto"

	"github.com/flatnet-io/flatnet/bgp"
)

// The routing policy is GoBGP's: defined sets and statements, assigned
// globally (GoBGP applies import and export policy per peer only to route
// server clients; other peers are told apart with neighbor sets).
//
// Import, first match wins, default reject:
//  0. our own adverts (route type local; GoBGP imports them too): accept
//
// then per address family:
//  1. the default route from a peer with AllowDefault: accept
//  2. a prefix overlapping a block we announce: reject
//  3. the default route: reject
//  4. from a mesh peer, a prefix inside a pool: accept
//  5. from explicit peer N, a prefix its Allow list (or, empty, the pools)
//     covers: accept
//
// Export, default reject:
//  1. our own adverts (route type local): accept
//  2. with the route reflector on, iBGP-learned routes to clients and mesh
//     peers: accept (GoBGP's RFC 4456 rules decide what is reflected where)
const (
	importPolicy = "flatnet-import"
	exportPolicy = "flatnet-export"
)

// policyInput is everything the policy is made from.
type policyInput struct {
	pools     []netip.Prefix
	ownBlocks []netip.Prefix // our adverts shorter than a host route
	mesh      []netip.Addr
	explicit  []bgp.Peer // non-mesh peers: Address and Import are used
	reflectTo []netip.Addr
}

// policy is one direction's policy and the sets it uses.
type policy struct {
	sets   []*api.DefinedSet
	policy *api.Policy
}

// equal reports whether p and q are the same policy.
func (p policy) equal(q policy) bool {
	return proto.Equal(&api.SetPoliciesRequest{DefinedSets: p.sets, Policies: []*api.Policy{p.policy}},
		&api.SetPoliciesRequest{DefinedSets: q.sets, Policies: []*api.Policy{q.policy}})
}

// request is the SetPolicies request that installs imp and exp.
func request(imp, exp policy) *api.SetPoliciesRequest {
	return &api.SetPoliciesRequest{
		DefinedSets: append(slices.Clone(imp.sets), exp.sets...),
		Policies:    []*api.Policy{imp.policy, exp.policy},
	}
}

// policyBuilder accumulates sets and statements.
type policyBuilder struct {
	name  string
	sets  []*api.DefinedSet
	stmts []*api.Statement
}

// neighborSet defines a neighbor set and returns its name, or "" when addrs
// is empty: GoBGP's neighbor condition matches every peer for an empty set.
func (b *policyBuilder) neighborSet(name string, addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return ""
	}
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = netip.PrefixFrom(a, a.BitLen()).String()
	}
	name = b.name + "-" + name
	b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: name, List: list})
	return name
}

// prefixSet defines a prefix set and returns its name, or "" when prefixes
// is empty.
func (b *policyBuilder) prefixSet(name string, prefixes []*api.Prefix) string {
	if len(prefixes) == 0 {
		return ""
	}
	name = b.name + "-" + name
	b.sets = append(b.sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name, Prefixes: prefixes})
	return name
}

// statement adds a statement with conditions c and action a, unless c
// names a set that is empty ("").
func (b *policyBuilder) statement(name string, c *api.Conditions, a api.RouteAction, sets ...string) {
	if slices.Contains(sets, "") {
		return
	}
	b.stmts = append(b.stmts, &api.Statement{
		Name:       b.name + "-" + name,
		Conditions: c,
		Actions:    &api.Actions{RouteAction: a},
	})
}

func (b *policyBuilder) done() policy {
	return policy{sets: b.sets, policy: &api.Policy{Name: b.name, Statements: b.stmts}}
}

func matchAny(set string) *api.MatchSet {
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: set}
}

const (
	accept = api.RouteAction_ROUTE_ACTION_ACCEPT
	reject = api.RouteAction_ROUTE_ACTION_REJECT
)

// buildImport builds the import policy.
func buildImport(in policyInput) policy {
	b := &policyBuilder{name: importPolicy}
	b.statement("local", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, accept)
	var allowDefault []netip.Addr
	for _, p := range in.explicit {
		if p.Import.AllowDefault {
			allowDefault = append(allowDefault, p.Address)
		}
	}
	allowDefaultSet := b.neighborSet("allow-default", allowDefault)
	meshSet := b.neighborSet("mesh", in.mesh)
	peerSets := make([]string, len(in.explicit))
	for i, p := range in.explicit {
		peerSets[i] = b.neighborSet("peer-"+p.Address.String(), []netip.Addr{p.Address})
	}
	for _, fam := range []string{"v4", "v6"} {
		is4 := fam == "v4"
		defaults := b.prefixSet("default-"+fam, []*api.Prefix{exact(defaultRoute(is4))})
		own := b.prefixSet("own-"+fam, overlapping(in.ownBlocks, is4))
		pools := b.prefixSet("pools-"+fam, within(in.pools, is4))

		b.statement("allow-default-"+fam, &api.Conditions{NeighborSet: matchAny(allowDefaultSet), PrefixSet: matchAny(defaults)}, accept, allowDefaultSet)
		b.statement("own-blocks-"+fam, &api.Conditions{PrefixSet: matchAny(own)}, reject, own)
		b.statement("no-default-"+fam, &api.Conditions{PrefixSet: matchAny(defaults)}, reject)
		b.statement("mesh-"+fam, &api.Conditions{NeighborSet: matchAny(meshSet), PrefixSet: matchAny(pools)}, accept, meshSet, pools)
		for i, p := range in.explicit {
			id := p.Address.String()
			peerSet := peerSets[i]
			allowed := pools
			if len(p.Import.Allow) > 0 {
				allowed = b.prefixSet("allow-"+id+"-"+fam, within(p.Import.Allow, is4))
			}
			b.statement("peer-"+id+"-"+fam, &api.Conditions{NeighborSet: matchAny(peerSet), PrefixSet: matchAny(allowed)}, accept, peerSet, allowed)
		}
	}
	return b.done()
}

// buildExport builds the export policy.
func buildExport(in policyInput) policy {
	b := &policyBuilder{name: exportPolicy}
	b.statement("local", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, accept)
	reflect := b.neighborSet("reflect-to", in.reflectTo)
	b.statement("reflect", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_INTERNAL, NeighborSet: matchAny(reflect)}, accept, reflect)
	return b.done()
}

func defaultRoute(is4 bool) netip.Prefix {
	if is4 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// exact matches p only.
func exact(p netip.Prefix) *api.Prefix {
	return &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())}
}

// within matches each of prefixes of the family is4 says and everything more
// specific inside it ("le 32"), but never the default route.
func within(prefixes []netip.Prefix, is4 bool) []*api.Prefix {
	var out []*api.Prefix
	for _, p := range prefixes {
		if p.Addr().Is4() != is4 {
			continue
		}
		out = append(out, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(max(p.Bits(), 1)), MaskLengthMax: uint32(p.Addr().BitLen())})
	}
	return out
}

// overlapping matches every prefix that overlaps one of blocks of the family
// is4 says, the default route aside: the block, whatever is inside it, and
// each of its supernets down to /1.
func overlapping(blocks []netip.Prefix, is4 bool) []*api.Prefix {
	out := within(blocks, is4)
	seen := map[netip.Prefix]bool{}
	for _, b := range blocks {
		if b.Addr().Is4() != is4 {
			continue
		}
		for bits := b.Bits() - 1; bits >= 1; bits-- {
			super, err := b.Addr().Prefix(bits)
			if err != nil {
				panic(fmt.Sprintf("supernet /%d of %v: %v", bits, b, err))
			}
			if !seen[super] {
				seen[super] = true
				out = append(out, exact(super))
			}
		}
	}
	return out
}
