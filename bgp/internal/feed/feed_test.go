package feed

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flatnet-io/flatnet/bgp"
)

var equateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func route(prefix string, nextHops ...string) bgp.Route {
	r := bgp.Route{Prefix: netip.MustParsePrefix(prefix)}
	for _, nh := range nextHops {
		r.NextHops = append(r.NextHops, netip.MustParseAddr(nh))
	}
	return r
}

// recorder is a watcher fn that keeps every call.
type recorder struct {
	mu    sync.Mutex
	calls [][]bgp.Route
	got   chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 100)} }

func (r *recorder) fn(routes []bgp.Route) {
	r.mu.Lock()
	r.calls = append(r.calls, routes)
	r.mu.Unlock()
	r.got <- struct{}{}
}

// wait waits for the next call and returns it.
func (r *recorder) wait(t *testing.T) []bgp.Route {
	t.Helper()
	select {
	case <-r.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no call within 10s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[len(r.calls)-1]
}

func TestWatchSnapshotThenChanges(t *testing.T) {
	f := New()
	f.Publish([]bgp.Route{route("10.0.1.0/26", "192.0.2.2"), route("10.0.0.0/26", "192.0.2.1")})

	rec := newRecorder()
	f.Watch(t.Context(), rec.fn)
	want := []bgp.Route{route("10.0.0.0/26", "192.0.2.1"), route("10.0.1.0/26", "192.0.2.2")}
	if diff := cmp.Diff(want, rec.wait(t), equateNetip); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}

	// An unchanged route is not passed on; a changed one and a withdrawal are.
	f.Publish([]bgp.Route{route("10.0.0.0/26", "192.0.2.1"), route("10.0.1.0/26", "192.0.2.2", "192.0.2.3"), route("10.0.2.0/26")})
	f.Publish([]bgp.Route{route("10.0.0.0/26")})
	done := make(chan struct{})
	f.Barrier(func() { close(done) })
	waitDone(t, "changes delivered", done)
	rec.mu.Lock()
	var got []bgp.Route
	for _, c := range rec.calls[1:] {
		got = append(got, c...)
	}
	rec.mu.Unlock()
	want = []bgp.Route{route("10.0.1.0/26", "192.0.2.2", "192.0.2.3"), route("10.0.0.0/26")}
	if diff := cmp.Diff(want, got, equateNetip); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]bgp.Route{route("10.0.1.0/26", "192.0.2.2", "192.0.2.3")}, f.Routes(), equateNetip); diff != "" {
		t.Errorf("Routes() (-want +got):\n%s", diff)
	}
}

func TestMerge(t *testing.T) {
	a := []bgp.Route{route("10.0.0.0/26", "192.0.2.1"), route("10.0.1.0/26", "192.0.2.1")}
	b := []bgp.Route{route("10.0.0.0/26"), route("10.0.2.0/26", "192.0.2.2")}
	got := merge(merge(nil, a), b)
	want := []bgp.Route{route("10.0.0.0/26"), route("10.0.1.0/26", "192.0.2.1"), route("10.0.2.0/26", "192.0.2.2")}
	if diff := cmp.Diff(want, got, equateNetip); diff != "" {
		t.Errorf("merge (-want +got):\n%s", diff)
	}
	if len(a[0].NextHops) != 1 {
		t.Errorf("merge wrote to its input: %v", a)
	}
}

// waitDone fails the test if done is not closed within 10s: a barrier that
// never passes is a failure, not a hang.
func waitDone(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: barrier not passed within 10s", what)
	}
}

func TestBarrierWaitsForSlowWatcher(t *testing.T) {
	f := New()
	release := make(chan struct{})
	var delivered sync.WaitGroup
	delivered.Add(1)
	f.Watch(t.Context(), func([]bgp.Route) {
		<-release
		delivered.Done()
	})
	f.Publish([]bgp.Route{route("10.0.0.0/26", "192.0.2.1")})
	done := make(chan struct{})
	f.Barrier(func() { close(done) })
	select {
	case <-done:
		t.Fatal("barrier passed before the watcher returned")
	default:
	}
	close(release)
	delivered.Wait()
	waitDone(t, "after the watcher returned", done)
}

func TestBarrierReleasedByCancelledWatcher(t *testing.T) {
	f := New()
	ctx, cancel := context.WithCancel(t.Context())
	block := make(chan struct{})
	f.Watch(ctx, func([]bgp.Route) { <-block })
	f.Publish([]bgp.Route{route("10.0.0.0/26", "192.0.2.1")})
	done := make(chan struct{})
	f.Barrier(func() { close(done) })
	cancel()
	close(block)
	waitDone(t, "cancelled watcher", done)
}

func TestBarrierWithoutWatchers(t *testing.T) {
	done := make(chan struct{})
	New().Barrier(func() { close(done) })
	waitDone(t, "no watchers", done)
}
