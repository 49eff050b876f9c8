package dataplane

import "github.com/flatnet-io/flatnet/internal/hopset"

// viewRoute is a route of ours in the view, compact: its key is the map's,
// its protocol routeProtocol.
type viewRoute struct {
	hops      hopset.Set // gateways, in the kernel's order
	oif       int32
	blackhole bool
}

// toView is r as the view keeps it.
func (v *view) toView(r kernelRoute) viewRoute {
	return viewRoute{hops: v.hops.Make(r.nextHops), oif: int32(r.oif), blackhole: r.blackhole}
}

// route is the kernel route v stands for at k.
func (v viewRoute) route(k routeKey) kernelRoute {
	return kernelRoute{key: k, protocol: routeProtocol, unicast: !v.blackhole, blackhole: v.blackhole, nextHops: v.hops.Addrs(), oif: int(v.oif)}
}

// is reports whether v already is t. Next hops stored in the same order
// (one, or the kernel's order sorted) compare without decoding.
func (v viewRoute) is(t target) bool {
	if v.blackhole || t.blackhole {
		return v.blackhole == t.blackhole
	}
	if v.hops == t.hops && t.hops != (hopset.Set{}) {
		return true
	}
	return v.route(routeKey{}).is(t)
}
