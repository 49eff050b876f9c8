package feed

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/flatnet-io/flatnet/bgp"
)

// TestMemoryPerRoute bounds what the feed keeps per learned route (next hops
// stored once per distinct list). It measures the live heap, so it is not
// exact; the bound is below what a slice per route took (about 125
// bytes).
func TestMemoryPerRoute(t *testing.T) {
	const n = 20_000
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	f := New()
	before := heap()
	changes := make([]bgp.Route, 0, n)
	first := netip.MustParseAddr("100.64.0.0")
	for a, i := first, 0; i < n; a, i = a.Next(), i+1 {
		changes = append(changes, bgp.Route{Prefix: netip.PrefixFrom(a, 32), NextHops: []netip.Addr{netip.MustParseAddr("192.0.2.2")}})
	}
	f.Publish(changes)
	changes = nil //nolint:ineffassign // drop the input: the heap then holds only what the feed keeps
	perRoute := float64(heap()-before) / n
	t.Logf("%.0f bytes a route", perRoute)
	if got := len(f.Routes()); got != n {
		t.Fatalf("%d routes, want %d", got, n)
	}
	if perRoute > 100 {
		t.Errorf("%.0f bytes a route, want at most 100", perRoute)
	}
}
