// Package dataplane owns what flatnet writes into the node's kernel routing
// table: the routes to other nodes' blocks that BGP learned, and a blackhole
// route over each of this node's own blocks. It must not decide what to route:
// BGP and IPAM decide, it programs.
//
// # Desired state and reconcile
//
// A [Reconciler] holds the desired routes ([Reconciler.Upsert],
// [Reconciler.Delete], [Reconciler.SetRoutes], [Reconciler.SetBlackholes]),
// compares them with the routes of the main table that carry [wellknown.RouteProtocol],
// and writes the difference from one goroutine ([Reconciler.Run]). Changes are
// coalesced for a few milliseconds and sent to the kernel in batches: many
// route messages per sendmsg, errors collected per route, one acknowledged
// round trip per batch. A subscription to the kernel's route events (others'
// changes only: a socket filter drops the echoes of our own writes) and a
// periodic full resync repair drift: a route of ours someone deletes comes
// back within the debounce. IPv4 sends no event for routes the kernel flushes
// when their device goes down; the resync puts those back.
//
// # Which routes are ours
//
// The reconciler owns a route of the main table only if it carries
// RouteProtocol and is one it could have made:
//
//   - a blackhole route (this node's blocks), or
//   - a unicast route with a gateway or several next hops (BGP-learned routes).
//
// Everything else is never written or deleted: routes of other protocols, and
// the CNI plugin's pod routes, which also carry RouteProtocol but point at a
// veth (fln*) without a gateway (scope link for IPv4). Pod routes are /32 and
// /128, so they stay more specific than the blackhole over their block. When a
// foreign route sits at exactly the key (prefix and metric) of a route the
// reconciler wants, the reconciler leaves it alone and reports a conflict.
//
// # Restarts
//
// Startup never flushes and [Reconciler.Close] removes nothing: after a restart
// or a kill -9 the kernel keeps forwarding on the routes it has. A route of ours
// that the new run does not want (stale) is removed only after
// [Reconciler.MarkConverged], which the caller invokes on BGP End-of-RIB or a
// timeout of its choosing. A prefix the caller has named since start (desired,
// then withdrawn) is no longer stale and is removed at once.
package dataplane

import "github.com/flatnet-io/flatnet/wellknown"

// routeProtocol is flatnet's mark on its routes, [wellknown.RouteProtocol].
// `ip route` shows it as "proto 75" (or "proto flatnet" once
// /etc/iproute2/rt_protos.d names it).
const routeProtocol = wellknown.RouteProtocol
