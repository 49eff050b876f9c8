package kubestore_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
)

// The benchmarks run the same allocator on the Kubernetes store (a real
// kube-apiserver with etcd on this machine's disk) and on the file store
// (fsync'ed, as by default), side by side in one run. Besides time per
// operation they report allocations per second, Allocate's p50 and p99, and
// for the Kubernetes store the API requests per operation, counted on the
// wire (the watch excluded): the target is one write per allocation.

var benchPool = ipam.Pool{Name: "bench", CIDR: netip.MustParsePrefix("10.30.0.0/16"), BlockSize: 26}

// requests counts API requests by kind.
type requests struct{ reads, writes atomic.Int64 }

func (r *requests) reset() { r.reads.Store(0); r.writes.Store(0) }

type countingTransport struct {
	next http.RoundTripper
	n    *requests
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch {
	case req.Method == http.MethodGet && req.URL.Query().Get("watch") == "true":
		// the long-lived watch: not a per-operation cost
	case req.Method == http.MethodGet:
		c.n.reads.Add(1)
	default:
		c.n.writes.Add(1)
	}
	return c.next.RoundTrip(req)
}

// benchStore is one store under comparison.
type benchStore struct {
	name string
	open func(b *testing.B) (ipam.Store, *requests)
}

var benchStores = []benchStore{
	{"kubestore", func(b *testing.B) (ipam.Store, *requests) {
		k := setup(b)
		n := &requests{}
		cfg := k.RESTConfig()
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, n} })
		return open(b, cfg), n
	}},
	// The store's own client-side rate limit (a zero QPS in the caller's
	// configuration gets DefaultQPS), as an agent runs by default.
	{"kubestore-default-qps", func(b *testing.B) (ipam.Store, *requests) {
		k := setup(b)
		n := &requests{}
		cfg := k.RESTConfig()
		cfg.QPS = 0
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, n} })
		return open(b, cfg), n
	}},
	{"filestore", func(b *testing.B) (ipam.Store, *requests) {
		s, err := filestore.Open(b.TempDir(), filestore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s, nil
	}},
}

func newBenchAllocator(b *testing.B, s ipam.Store) *ipam.Allocator {
	a, err := ipam.New(s, ipam.Config{Node: "bench", Pools: []ipam.Pool{benchPool}})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// latencies records operation times and reports their percentiles.
type latencies []time.Duration

func (l *latencies) time(f func() error) error {
	start := time.Now()
	err := f()
	*l = append(*l, time.Since(start))
	return err
}

func (l latencies) report(b *testing.B, n *requests, ops int) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	pct := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(ops)/b.Elapsed().Seconds(), "allocs/s")
	if n != nil {
		b.ReportMetric(float64(n.reads.Load())/float64(ops), "reads/op")
		b.ReportMetric(float64(n.writes.Load())/float64(ops), "writes/op")
	}
}

// BenchmarkAllocate allocates into a store that grows from empty: one write
// an allocation, one of every 64 a block claim.
func BenchmarkAllocate(b *testing.B) {
	for _, bs := range benchStores {
		b.Run("store="+bs.name, func(b *testing.B) {
			s, n := bs.open(b)
			a := newBenchAllocator(b, s)
			ctx := context.Background()
			lat := make(latencies, 0, b.N)
			if n != nil {
				n.reset()
			}
			b.ResetTimer()
			for i := range b.N {
				err := lat.time(func() error {
					_, err := a.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("c%d/eth0", i)})
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			lat.report(b, n, b.N)
		})
	}
}

// BenchmarkChurn is a node at a steady 110 pods (the kubelet's default
// maximum): each op starts one pod and stops the oldest, an allocation and a
// release. Latencies are Allocate's.
func BenchmarkChurn(b *testing.B) {
	const pods = 110
	for _, bs := range benchStores {
		if strings.HasSuffix(bs.name, "default-qps") {
			continue
		}
		b.Run("store="+bs.name, func(b *testing.B) {
			s, n := bs.open(b)
			a := newBenchAllocator(b, s)
			ctx := context.Background()
			handle := func(i int) string { return fmt.Sprintf("c%d/eth0", i) }
			for i := range pods {
				if _, err := a.Allocate(ctx, ipam.Request{Handle: handle(i)}); err != nil {
					b.Fatal(err)
				}
			}
			lat := make(latencies, 0, b.N)
			if n != nil {
				n.reset()
			}
			b.ResetTimer()
			for i := pods; i < pods+b.N; i++ {
				err := lat.time(func() error {
					_, err := a.Allocate(ctx, ipam.Request{Handle: handle(i)})
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.Release(ctx, handle(i-pods)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			lat.report(b, n, b.N)
		})
	}
}
