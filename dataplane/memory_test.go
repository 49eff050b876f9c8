package dataplane

import (
	"net/netip"
	"runtime"
	"testing"
)

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoryPerRoute bounds what the reconciler keeps per learned route: the
// wanted route and its view of the kernel's (next hops stored once per
// distinct list). It measures the live heap, so it is not exact; the bound
// is far below what slices per route took (about 430 bytes).
func TestMemoryPerRoute(t *testing.T) {
	const n = 20_000
	f := newFakeKernel()
	r := newTestReconciler(t, f)
	must(t, r.resync(t.Context()))
	before := heapInUse()
	routes := make(map[netip.Prefix][]netip.Addr, n)
	gw := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	first := netip.MustParseAddr("100.64.0.0")
	for a, i := first, 0; i < n; a, i = a.Next(), i+1 {
		routes[netip.PrefixFrom(a, 32)] = gw
	}
	must(t, r.setRoutes(routes))
	routes = nil //nolint:ineffassign // drop the input: the heap then holds only what the reconciler keeps
	must(t, r.reconcile(t.Context(), false))
	f.mu.Lock()
	f.routes = nil // the fake kernel's copy is not the reconciler's
	f.mu.Unlock()
	perRoute := float64(int64(heapInUse())-int64(before)) / n
	t.Logf("%.0f bytes a route (wanted route and view of the kernel)", perRoute)
	if c := r.Counts(); c.Routes != n {
		t.Fatalf("Counts() = %+v, want %d routes", c, n)
	}
	if perRoute > 250 {
		t.Errorf("%.0f bytes a route, want at most 250", perRoute)
	}
}
