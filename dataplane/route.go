package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/flatnet-io/flatnet/internal/hopset"
)

// ipv6DefaultMetric is the metric the kernel gives an IPv6 route that names
// none; IPv4 routes default to 0.
const ipv6DefaultMetric = 1024

// routeKey identifies a route in the main table the way the kernel does for
// our routes: the prefix and the metric (priority).
type routeKey struct {
	prefix netip.Prefix
	metric uint32
}

func (k routeKey) String() string {
	if k.metric == defaultMetric(k.prefix) {
		return k.prefix.String()
	}
	return fmt.Sprintf("%s metric %d", k.prefix, k.metric)
}

// defaultMetric is the metric of the routes the reconciler writes.
func defaultMetric(p netip.Prefix) uint32 {
	if p.Addr().Is6() {
		return ipv6DefaultMetric
	}
	return 0
}

func keyOf(p netip.Prefix) routeKey { return routeKey{prefix: p, metric: defaultMetric(p)} }

// target is what the reconciler wants at a prefix: a blackhole or a route over
// nextHops (sorted, no duplicates; several make an ECMP route).
type target struct {
	blackhole bool
	nextHops  []netip.Addr
	hops      hopset.Set // nextHops as stored
}

// kernelRoute is a route of the main table as the reconciler reads it.
type kernelRoute struct {
	key       routeKey
	protocol  int
	unicast   bool         // rtm_type unicast
	blackhole bool         // rtm_type blackhole
	nextHops  []netip.Addr // gateways, in the kernel's order
	oif       int          // the output interface of a single-path route (lo for an IPv6 blackhole)
}

// owned reports whether the route is one the reconciler may write or delete:
// it carries routeProtocol and is a blackhole or has a gateway. A route of
// routeProtocol through a device without a gateway is a CNI pod route and is
// never ours.
func (k kernelRoute) owned() bool {
	return k.protocol == routeProtocol && (k.blackhole || k.unicast && len(k.nextHops) > 0)
}

// is reports whether the route already is t.
func (k kernelRoute) is(t target) bool {
	if k.blackhole || t.blackhole {
		return k.blackhole == t.blackhole
	}
	if len(k.nextHops) != len(t.nextHops) {
		return false
	}
	return slices.Equal(sortedAddrs(k.nextHops), t.nextHops)
}

// opKind is what a kernel write does.
type opKind uint8

const (
	opAdd     opKind = iota // create; fail if any route has the key
	opReplace               // overwrite our route at the key
	opDelete                // delete our route at the key
)

func (k opKind) String() string {
	return [...]string{"add", "replace", "delete"}[k]
}

// op is one route write. For a delete it describes the route as the kernel
// has it, so the message matches that route and nothing else.
type op struct {
	kind      opKind
	key       routeKey
	blackhole bool
	nextHops  []netip.Addr
	oif       int
}

func (o op) route() kernelRoute {
	return kernelRoute{key: o.key, protocol: routeProtocol, unicast: !o.blackhole, blackhole: o.blackhole, nextHops: o.nextHops, oif: o.oif}
}

// opError is a route write the kernel refused.
type opError struct {
	op  opKind
	key routeKey
	err error
}

func (e *opError) Error() string { return fmt.Sprintf("%s route %s: %v", e.op, e.key, e.err) }
func (e *opError) Unwrap() error { return e.err }

// validPrefix returns p masked, or an error if it cannot be routed.
func validPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("invalid prefix %v", p)
	}
	if p.Addr().Is4In6() {
		return p, fmt.Errorf("prefix %s: IPv4-mapped prefixes are not routed, use the IPv4 form", p)
	}
	if p.Addr().Zone() != "" {
		return p, fmt.Errorf("prefix %s: has a zone", p)
	}
	return p.Masked(), nil
}

// validNextHops returns the next hops for p sorted and without duplicates, or
// an error if there are none or one is of the other family.
func validNextHops(p netip.Prefix, nextHops []netip.Addr) ([]netip.Addr, error) {
	if len(nextHops) == 0 {
		return nil, fmt.Errorf("route %s: no next hops", p)
	}
	if nh := nextHops[0]; len(nextHops) == 1 && nh.IsValid() && !nh.Is4In6() && nh.Zone() == "" && !nh.IsUnspecified() &&
		!nh.IsLinkLocalUnicast() && nh.Is4() == p.Addr().Is4() {
		return nextHops, nil // the common case, valid as it is: no copy
	}
	out := make([]netip.Addr, 0, len(nextHops))
	var errs []error
	for _, nh := range nextHops {
		nh = nh.Unmap()
		switch {
		case !nh.IsValid() || nh.IsUnspecified():
			errs = append(errs, fmt.Errorf("route %s: invalid next hop %v", p, nh))
		case nh.Is4() != p.Addr().Is4():
			errs = append(errs, fmt.Errorf("route %s: next hop %s is of the other address family", p, nh))
		case nh.Zone() != "" || nh.IsLinkLocalUnicast():
			// A link-local gateway needs an output interface; not supported.
			errs = append(errs, fmt.Errorf("route %s: link-local next hop %s is not supported", p, nh))
		default:
			out = append(out, nh)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

func sortedAddrs(a []netip.Addr) []netip.Addr {
	if slices.IsSortedFunc(a, netip.Addr.Compare) {
		return a
	}
	s := slices.Clone(a)
	slices.SortFunc(s, netip.Addr.Compare)
	return s
}
