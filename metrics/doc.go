// Package metrics is the agent's Prometheus instrumentation: one registry
// the agent owns (never the global default), served as /metrics (Prometheus
// text and OpenMetrics) on the health listener.
//
// It reads what the packages below already keep, at scrape time: the
// speaker's Status (sessions, prefix counts, flaps, rejections by reason),
// the route reconciler's Counts (routes desired and programmed, drift
// repairs, netlink errors), the allocator's blocks and Stats (per pool and
// per node, CAS conflicts, retries, GC releases). Events with a duration are
// observed as they happen, through hooks the agent wires: the API's calls
// (a gRPC interceptor: the CNI plugin's Allocate, Release and GC), the
// allocator's operations (ipam.Config.Timed), the reconciler's passes
// (dataplane.Options.OnPass).
//
// It must not change the state it reads, nor be imported by the packages
// it reads: they know nothing of Prometheus. Labels are bounded: pools,
// peers, API methods, reasons, never a pod or an address.
package metrics
