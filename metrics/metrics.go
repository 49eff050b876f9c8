package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/dataplane"
	"github.com/flatnet-io/flatnet/ipam"
)

const namespace = "flatnet"

// collectTimeout bounds what one scrape waits for the speaker or the
// datastore.
const collectTimeout = 5 * time.Second

// durationBuckets, in seconds, span a route pass or an allocation on tmpfs
// (well under a millisecond) to an Allocate that waits for policy or a slow
// datastore (seconds).
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics is the agent's registry and the instruments fed by events.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
	ipamOps     *prometheus.HistogramVec
	passes      *prometheus.HistogramVec
}

// New returns the metrics of an agent of the given version: build
// information, the Go runtime's and the process's metrics, and the event
// instruments. The Collect methods add the parts the agent runs.
func New(version string, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: log,
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "api", Name: "requests_total",
			Help: "Calls to the agent's gRPC API (the CNI plugin's Allocate, Release and GC; flatnetctl's Usage, List, Status), by method and gRPC status code.",
		}, []string{"method", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "api", Name: "request_duration_seconds",
			Help:    "Time the agent took to answer a gRPC API call, by method.",
			Buckets: durationBuckets,
		}, []string{"method"}),
		ipamOps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "ipam", Name: "operation_duration_seconds",
			Help:    "Time the allocator took for an operation (allocate, release, gc), waiting for its lock and the datastore included.",
			Buckets: durationBuckets,
		}, []string{"operation"}),
		passes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "dataplane", Name: "reconcile_duration_seconds",
			Help:    "Time a route reconcile pass took (full: every route, after reading the kernel; partial: the changed routes).",
			Buckets: durationBuckets,
		}, []string{"pass"}),
	}
	for _, op := range []string{ipam.OpAllocate, ipam.OpRelease, ipam.OpGC} {
		m.ipamOps.WithLabelValues(op)
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1: the agent's version and the Go version it was built with.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.apiRequests, m.apiDuration, m.ipamOps,
	)
	return m
}

// Registry is where the metrics are registered, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry: Prometheus text, or OpenMetrics to a scraper
// that asks for it. A part that cannot be read (the datastore is down) is
// left out and logged; the rest is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:          slogPrinter{m.log},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Registry:          m.reg, // promhttp_metric_handler_errors_total
		Timeout:           2 * collectTimeout,
	})
}

// slogPrinter is promhttp's error log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	args := make([]any, 0, 2*len(v))
	for _, x := range v {
		if err, ok := x.(error); ok {
			args = append(args, "err", err)
		}
	}
	p.log.Warn("metrics scrape incomplete", args...)
}

// UnaryInterceptor counts and times the agent's gRPC calls.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		method := path.Base(info.FullMethod)
		m.apiDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
		m.apiRequests.WithLabelValues(method, status.Code(err).String()).Add(1)
		return resp, err
	}
}

// InitAPI makes the series of every method srv serves exist before its
// first call (as OK, and its histogram), so that rates start from zero.
func (m *Metrics) InitAPI(srv *grpc.Server) {
	for _, svc := range srv.GetServiceInfo() {
		for _, meth := range svc.Methods {
			m.apiRequests.WithLabelValues(meth.Name, "OK")
			m.apiDuration.WithLabelValues(meth.Name)
		}
	}
}

// IPAMTimed is the allocator's ipam.Config.Timed.
func (m *Metrics) IPAMTimed(op string, took time.Duration) {
	m.ipamOps.WithLabelValues(op).Observe(took.Seconds())
}

// DataplanePass is the reconciler's dataplane.Options.OnPass.
func (m *Metrics) DataplanePass(p dataplane.Pass) {
	kind := "partial"
	if p.Full {
		kind = "full"
	}
	m.passes.WithLabelValues(kind).Observe(p.Duration.Seconds())
}

// CollectBGP adds the sessions of sp, read at scrape time.
func (m *Metrics) CollectBGP(sp bgp.Speaker) { m.reg.MustRegister(newBGPCollector(sp)) }

// CollectRoutes adds the route reconciler's counts, read at scrape time,
// and its pass durations.
func (m *Metrics) CollectRoutes(counts func() dataplane.Counts) {
	m.passes.WithLabelValues("full")
	m.passes.WithLabelValues("partial")
	m.reg.MustRegister(newRoutesCollector(counts), m.passes)
}

// CollectIPAM adds the allocator's pools, blocks and counts, read at scrape
// time.
func (m *Metrics) CollectIPAM(a *ipam.Allocator) { m.reg.MustRegister(newIPAMCollector(a)) }
