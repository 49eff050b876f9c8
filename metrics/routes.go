package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flatnet-io/flatnet/dataplane"
)

// routesCollector reads the route reconciler's Counts at scrape time.
type routesCollector struct {
	counts func() dataplane.Counts

	desired, programmed, ecmp, pending, conflicts, stale, converged *prometheus.Desc
	repairs, netlinkErrors, failures, roundTrips                    *prometheus.Desc
}

func newRoutesCollector(counts func() dataplane.Counts) *routesCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "dataplane", name), help, labels, nil)
	}
	return &routesCollector{
		counts:        counts,
		desired:       d("routes_desired", "Prefixes the reconciler wants in the kernel: learned routes and blackholes over this node's blocks."),
		programmed:    d("routes_programmed", "Routes of flatnet's (protocol 75) in the kernel's main table, by type (learned, blackhole); pod routes are the CNI plugin's and not counted.", "type"),
		ecmp:          d("routes_ecmp", "Learned routes in the kernel with more than one next hop."),
		pending:       d("routes_pending", "Wanted prefixes the kernel does not have as wanted yet (being written, or failing)."),
		conflicts:     d("route_conflicts", "Wanted prefixes held in the kernel by a route of another owner, left alone."),
		stale:         d("routes_stale", "Routes of an earlier run nobody announces any more, kept until BGP has converged."),
		converged:     d("converged", "1 once BGP has converged after start and stale routes may go."),
		repairs:       d("drift_repairs_total", "Route writes that put back a route of flatnet's that someone else changed or deleted in the kernel."),
		netlinkErrors: d("netlink_errors_total", "Failed netlink requests: route writes the kernel refused, route dumps, event subscriptions."),
		failures:      d("reconcile_failures_total", "Reconcile passes that left something unwritten; they are retried."),
		roundTrips:    d("netlink_round_trips_total", "Acknowledged netlink batches of route messages sent."),
	}
}

func (c *routesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.desired, c.programmed, c.ecmp, c.pending, c.conflicts, c.stale, c.converged,
		c.repairs, c.netlinkErrors, c.failures, c.roundTrips,
	} {
		ch <- d
	}
}

func (c *routesCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.counts()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(c.desired, float64(n.Desired))
	gauge(c.programmed, float64(n.Routes), "learned")
	gauge(c.programmed, float64(n.Blackholes), "blackhole")
	gauge(c.ecmp, float64(n.ECMP))
	gauge(c.pending, float64(n.Pending))
	gauge(c.conflicts, float64(n.Conflicts))
	gauge(c.stale, float64(n.Stale))
	gauge(c.converged, b2f(n.Converged))
	counter(c.repairs, n.Repairs)
	counter(c.netlinkErrors, n.NetlinkErrors)
	counter(c.failures, n.Failures)
	counter(c.roundTrips, n.RoundTrips)
}
