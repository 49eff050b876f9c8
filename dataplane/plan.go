package dataplane

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/flatnet-io/flatnet/internal/hopset"
)

// desired is the routes the caller wants. A prefix that is both a learned
// route and a blackhole is a blackhole: it is one of this node's blocks.
type desired struct {
	routes     map[netip.Prefix]hopset.Set // learned: prefix → sorted next hops
	blackholes map[netip.Prefix]struct{}
	// named holds the prefixes the caller has named since start; until
	// converged only these may lose a route of ours. Nil once converged.
	named     map[netip.Prefix]struct{}
	converged bool
}

func newDesired() desired {
	return desired{
		routes:     map[netip.Prefix]hopset.Set{},
		blackholes: map[netip.Prefix]struct{}{},
		named:      map[netip.Prefix]struct{}{},
	}
}

// target returns what is wanted at p. decoded, if not nil, holds the next
// hops of the sets decoded so far, shared (read-only) by the targets.
func (d *desired) target(p netip.Prefix, decoded map[hopset.Set][]netip.Addr) (target, bool) {
	if _, ok := d.blackholes[p]; ok {
		return target{blackhole: true}, true
	}
	nh, ok := d.routes[p]
	if !ok {
		return target{}, false
	}
	hops, ok := decoded[nh]
	if !ok {
		hops = nh.Addrs()
		if decoded != nil {
			decoded[nh] = hops
		}
	}
	return target{nextHops: hops, hops: nh}, true
}

// name records that the caller has withdrawn p (or never wanted it) in
// this run. Wanting p names it too, without a record: it is in routes or
// blackholes while wanted, and withdrawing it records it. (Recording every
// prefix wanted took as much memory as the wanted routes themselves.)
func (d *desired) name(p netip.Prefix) {
	if !d.converged {
		d.named[p] = struct{}{}
	}
}

// mayRemove reports whether a route of ours at p that is not wanted (or not
// at its metric) may go: always once converged, before that only if the
// caller named p in this run.
func (d *desired) mayRemove(p netip.Prefix) bool {
	if d.converged {
		return true
	}
	_, named := d.named[p]
	_, route := d.routes[p]
	_, blackhole := d.blackholes[p]
	return named || route || blackhole
}

func (d *desired) markConverged() {
	d.converged = true
	d.named = nil
}

// view is the reconciler's picture of the main table: our routes, and the
// keys at which some other route sits.
type view struct {
	ours    map[routeKey]viewRoute
	foreign map[routeKey]struct{}
	hops    hopset.Cache
}

func newView(routes []kernelRoute) view {
	v := view{ours: make(map[routeKey]viewRoute, len(routes)), foreign: map[routeKey]struct{}{}}
	for _, r := range routes {
		v.set(r)
	}
	return v
}

// set records that r is in the kernel.
func (v *view) set(r kernelRoute) {
	if r.owned() {
		v.ours[r.key] = v.toView(r)
		return
	}
	v.foreign[r.key] = struct{}{}
}

// routeEvent is a change the kernel reported in the main table.
type routeEvent struct {
	deleted bool
	replace bool // the new route took the place of whatever had its key
	route   kernelRoute
}

// apply records ev.
func (v *view) apply(ev routeEvent) {
	switch {
	case ev.deleted:
		v.remove(ev.route)
	case ev.replace:
		delete(v.ours, ev.route.key)
		delete(v.foreign, ev.route.key)
		v.set(ev.route)
	default:
		v.set(ev.route)
	}
}

// remove records that r left the kernel.
func (v *view) remove(r kernelRoute) {
	if r.owned() {
		delete(v.ours, r.key)
		return
	}
	delete(v.foreign, r.key)
}

// done records a write the kernel accepted.
func (v *view) done(o op) {
	if o.kind == opDelete {
		delete(v.ours, o.key)
		return
	}
	v.ours[o.key] = v.toView(o.route())
}

// allKeys returns every key the desired state or our routes name.
func allKeys(d *desired, v *view) map[routeKey]struct{} {
	keys := make(map[routeKey]struct{}, len(d.routes)+len(d.blackholes)+len(v.ours))
	for p := range d.routes {
		keys[keyOf(p)] = struct{}{}
	}
	for p := range d.blackholes {
		keys[keyOf(p)] = struct{}{}
	}
	for k := range v.ours {
		keys[k] = struct{}{}
	}
	return keys
}

// plan works out the writes that take the kernel from v to d at keys, in a
// stable order (deletes last, so a route moving between keys never leaves a
// gap), and the keys it leaves alone because a foreign route holds them.
// resolve, when not nil, turns a next hop into the gateway the kernel is
// given (resolveNextHops).
func plan(keys map[routeKey]struct{}, d *desired, v *view, resolve func(netip.Addr) netip.Addr) (ops []op, conflicts []routeKey) {
	var deletes []op
	decoded := map[hopset.Set][]netip.Addr{} // the ops of one set share its slice
	for _, k := range sortedKeys(keys) {
		t, wanted := d.target(k.prefix, decoded)
		if wanted && !t.blackhole && resolve != nil {
			if hops := resolveNextHops(t.nextHops, resolve); !slices.Equal(hops, t.nextHops) {
				t.nextHops, t.hops = hops, hopset.Make(hops)
			}
		}
		wanted = wanted && k.metric == defaultMetric(k.prefix)
		have, ours := v.ours[k]
		_, foreign := v.foreign[k]
		switch {
		case wanted && foreign:
			conflicts = append(conflicts, k)
		case wanted && !ours:
			ops = append(ops, op{kind: opAdd, key: k, blackhole: t.blackhole, nextHops: t.nextHops})
		case wanted && !have.is(t):
			ops = append(ops, op{kind: opReplace, key: k, blackhole: t.blackhole, nextHops: t.nextHops})
		case !wanted && ours && d.mayRemove(k.prefix):
			r := have.route(k)
			deletes = append(deletes, op{kind: opDelete, key: k, blackhole: r.blackhole, nextHops: r.nextHops, oif: r.oif})
		}
	}
	return append(ops, deletes...), conflicts
}

func sortedKeys(keys map[routeKey]struct{}) []routeKey {
	out := make([]routeKey, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b routeKey) int {
		return cmp.Or(a.prefix.Compare(b.prefix), cmp.Compare(a.metric, b.metric))
	})
	return out
}

// resolveNextHops maps BGP next hops to the gateways the kernel can use: a
// next hop that is not on a link of this node (an iBGP peer in another
// subnet, behind the underlay's router) is reached through the gateway of the
// underlay route to it, as a router resolves a next hop recursively. Hops
// that resolve to one gateway become one; the result is sorted.
func resolveNextHops(nextHops []netip.Addr, resolve func(netip.Addr) netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(nextHops))
	for _, nh := range nextHops {
		if g := resolve(nh); !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return sortedAddrs(out)
}
