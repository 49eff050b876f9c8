package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeKernel is a main table in memory with the kernel's write semantics for
// the messages the reconciler sends. Like the netlink kernel, it reports
// others' changes (external) to its subscriber, not the effects of apply.
type fakeKernel struct {
	mu      sync.Mutex
	routes  []kernelRoute
	fail    map[netip.Prefix]error // writes at these prefixes fail
	onList  func()                 // runs while list reads
	sub     func(routeEvent)
	applies int // apply calls
	writes  int // ops applied
}

func newFakeKernel(routes ...kernelRoute) *fakeKernel {
	return &fakeKernel{routes: routes, fail: map[netip.Prefix]error{}}
}

func (f *fakeKernel) list(context.Context) ([]kernelRoute, error) {
	f.mu.Lock()
	out := slices.Clone(f.routes)
	hook := f.onList
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return out, nil
}

func (f *fakeKernel) apply(_ context.Context, ops []op) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	errs := make([]error, len(ops))
	for i, o := range ops {
		f.writes++
		if err := f.fail[o.key.prefix]; err != nil {
			errs[i] = err
			continue
		}
		at := slices.IndexFunc(f.routes, func(r kernelRoute) bool { return r.key == o.key })
		switch o.kind {
		case opAdd:
			if at >= 0 {
				errs[i] = syscall.EEXIST
				continue
			}
			f.routes = append(f.routes, o.route())
		case opReplace: // the kernel replaces the first route with the key
			if at >= 0 {
				f.routes[at] = o.route()
			} else {
				f.routes = append(f.routes, o.route())
			}
		case opDelete:
			at = slices.IndexFunc(f.routes, func(r kernelRoute) bool {
				return r.key == o.key && r.protocol == routeProtocol && r.blackhole == o.blackhole && slices.Equal(r.nextHops, o.nextHops)
			})
			if at >= 0 {
				f.routes = slices.Delete(f.routes, at, at+1)
			}
		}
	}
	return errs
}

func (f *fakeKernel) subscribe(_ context.Context, fn func(routeEvent)) (<-chan error, error) {
	f.mu.Lock()
	f.sub = fn
	f.mu.Unlock()
	return make(chan error), nil
}

func (f *fakeKernel) roundTrips() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return uint64(f.applies)
}

func (f *fakeKernel) close() error { return nil }

func (f *fakeKernel) gateway(a netip.Addr) netip.Addr { return a }

// external changes the table behind the reconciler's back: del removes the
// routes at key, add adds r.
func (f *fakeKernel) external(del bool, r kernelRoute) {
	f.mu.Lock()
	if del {
		f.routes = slices.DeleteFunc(f.routes, func(x kernelRoute) bool { return x.key == r.key && x.protocol == r.protocol })
	} else {
		f.routes = append(f.routes, r)
	}
	sub := f.sub
	f.mu.Unlock()
	if sub != nil {
		sub(routeEvent{deleted: del, route: r})
	}
}

// table renders the fake's routes, sorted, for diffs.
func (f *fakeKernel) table() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.routes {
		s := r.key.String()
		switch {
		case r.protocol != routeProtocol:
			s += " foreign"
		case r.blackhole:
			s += " blackhole"
		case len(r.nextHops) == 0:
			s += " pod"
		default:
			s += " via " + addrList(sortedAddrs(r.nextHops))
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// newTestReconciler returns a reconciler over f that is subscribed but not
// running: tests drive resync and reconcile themselves.
func newTestReconciler(t *testing.T, f *fakeKernel) *Reconciler {
	t.Helper()
	r := newReconciler(f, nil, settings{})
	if _, err := f.subscribe(t.Context(), r.observe); err != nil {
		t.Fatal(err)
	}
	return r
}

func wantTable(t *testing.T, f *fakeKernel, want ...string) {
	t.Helper()
	sort.Strings(want)
	if diff := cmp.Diff(want, f.table()); diff != "" {
		t.Errorf("kernel table (-want +got):\n%s", diff)
	}
}

func TestReconcilerRestartKeepsRoutesUntilConverged(t *testing.T) {
	ctx := t.Context()
	f := newFakeKernel(
		learned("10.0.1.0/26", "192.0.2.2"), // from the previous run, relearned
		learned("10.0.2.0/26", "192.0.2.2"), // from the previous run, never relearned
		blackhole("10.0.0.0/26"),            // the previous run's block
		podRoute("10.0.0.5/32"),
		withProto(learned("10.0.9.0/24", "192.0.2.9"), 4),
	)
	r := newTestReconciler(t, f)
	if err := r.Upsert(pfx("10.0.1.0/26"), addrs("192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	if err := r.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if f.writes != 0 {
		t.Errorf("restart wrote %d routes, want none", f.writes)
	}
	if c := r.Counts(); c.Stale != 2 || c.Converged {
		t.Errorf("Counts() = %+v, want 2 stale, not converged", c)
	}
	r.MarkConverged()
	if err := r.reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	wantTable(t, f, "10.0.1.0/26 via [192.0.2.2]", "10.0.0.5/32 pod", "10.0.9.0/24 foreign")
}

// A prefix the caller names in this run is not stale: withdrawn, or wanted
// at another metric than the route of the earlier run, it goes before
// convergence. The others wait.
func TestReconcilerNamedPrefixesGoBeforeConverged(t *testing.T) {
	ctx := t.Context()
	old := learned("10.0.3.0/26", "192.0.2.2")
	old.key.metric = 50
	f := newFakeKernel(
		learned("10.0.1.0/26", "192.0.2.2"), // withdrawn in this run
		learned("10.0.2.0/26", "192.0.2.2"), // never named
		old,                                 // wanted again, at the default metric
		learned("10.0.4.0/26", "192.0.2.2"), // wanted, then dropped by SetRoutes
	)
	r := newTestReconciler(t, f)
	must(t, r.resync(ctx))
	must(t, r.Upsert(pfx("10.0.1.0/26"), addrs("192.0.2.3")))
	r.Delete(pfx("10.0.1.0/26"))
	must(t, r.setRoutes(map[netip.Prefix][]netip.Addr{pfx("10.0.3.0/26"): addrs("192.0.2.2"), pfx("10.0.4.0/26"): addrs("192.0.2.2")}))
	must(t, r.setRoutes(map[netip.Prefix][]netip.Addr{pfx("10.0.3.0/26"): addrs("192.0.2.2")}))
	must(t, r.reconcile(ctx, true))
	wantTable(t, f, "10.0.2.0/26 via [192.0.2.2]", "10.0.3.0/26 via [192.0.2.2]")
}

func TestReconcilerWritesAndRepairs(t *testing.T) {
	ctx := t.Context()
	f := newFakeKernel(podRoute("10.0.0.5/32"))
	r := newTestReconciler(t, f)
	if err := r.resync(ctx); err != nil {
		t.Fatal(err)
	}
	r.MarkConverged()
	must(t, r.SetBlackholes([]netip.Prefix{pfx("10.0.0.0/26"), pfx("2001:db8:0:1::/64")}))
	must(t, r.setRoutes(map[netip.Prefix][]netip.Addr{
		pfx("10.0.1.0/26"):       addrs("192.0.2.2"),
		pfx("10.0.2.0/26"):       addrs("192.0.2.3", "192.0.2.2"),
		pfx("2001:db8:0:2::/64"): addrs("2001:db8::2"),
	}))
	must(t, r.reconcile(ctx, false))
	wantTable(t, f,
		"10.0.0.0/26 blackhole", "10.0.0.5/32 pod", "10.0.1.0/26 via [192.0.2.2]",
		"10.0.2.0/26 via [192.0.2.2 192.0.2.3]", "2001:db8:0:1::/64 blackhole", "2001:db8:0:2::/64 via [2001:db8::2]")
	want := Counts{Routes: 3, ECMP: 1, Blackholes: 2, Desired: 5, Converged: true, RoundTrips: 1}
	if diff := cmp.Diff(want, r.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}

	// Someone deletes a route by hand: the event brings it back.
	f.external(true, learned("10.0.1.0/26", "192.0.2.2"))
	must(t, r.reconcile(ctx, false))
	if c := r.Counts(); c.Repairs != 1 {
		t.Errorf("repairs after a deleted route came back = %d, want 1", c.Repairs)
	}
	// A change no event told of is found by the next resync.
	f.mu.Lock()
	f.routes = slices.DeleteFunc(f.routes, func(x kernelRoute) bool { return x.key == keyOf(pfx("10.0.0.0/26")) })
	f.mu.Unlock()
	must(t, r.resync(ctx))
	if c := r.Counts(); c.Repairs != 2 {
		t.Errorf("repairs after a resync found a blackhole gone = %d, want 2", c.Repairs)
	}
	// Changes and withdrawals.
	must(t, r.Upsert(pfx("10.0.2.0/26"), addrs("192.0.2.4")))
	r.Delete(pfx("2001:db8:0:2::/64"))
	must(t, r.SetBlackholes([]netip.Prefix{pfx("10.0.0.0/26")}))
	must(t, r.reconcile(ctx, false))
	wantTable(t, f, "10.0.0.0/26 blackhole", "10.0.0.5/32 pod", "10.0.1.0/26 via [192.0.2.2]", "10.0.2.0/26 via [192.0.2.4]")

	// A pass with nothing to do writes nothing.
	before := f.writes
	must(t, r.reconcile(ctx, true))
	if f.writes != before {
		t.Errorf("idle pass wrote %d routes", f.writes-before)
	}
}

func TestReconcilerReportsErrorsPerRoute(t *testing.T) {
	ctx := t.Context()
	f := newFakeKernel(withProto(learned("10.0.3.0/26", "192.0.2.9"), 4))
	f.fail[pfx("10.0.1.0/26")] = syscall.ENETUNREACH
	r := newTestReconciler(t, f)
	must(t, r.resync(ctx))
	must(t, r.setRoutes(map[netip.Prefix][]netip.Addr{
		pfx("10.0.1.0/26"): addrs("192.0.2.2"),
		pfx("10.0.2.0/26"): addrs("192.0.2.2"),
		pfx("10.0.3.0/26"): addrs("192.0.2.2"),
	}))
	err := r.reconcile(ctx, false)
	if !errors.Is(err, syscall.ENETUNREACH) || !errors.Is(err, ErrConflict) {
		t.Errorf("reconcile() = %v, want ENETUNREACH and ErrConflict", err)
	}
	wantTable(t, f, "10.0.2.0/26 via [192.0.2.2]", "10.0.3.0/26 foreign")
	c := r.Counts()
	if c.Pending != 2 || c.Conflicts != 1 || c.Failures != 1 || c.LastError == "" || c.NetlinkErrors != 1 || c.Repairs != 0 {
		t.Errorf("Counts() = %+v, want 2 pending, 1 conflict, 1 failure with its error, 1 netlink error, no repair", c)
	}

	// Once the next hop is reachable, the retry installs the route.
	delete(f.fail, pfx("10.0.1.0/26"))
	if err := r.resync(ctx); !errors.Is(err, ErrConflict) || errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("resync() = %v, want only the conflict", err)
	}
	wantTable(t, f, "10.0.1.0/26 via [192.0.2.2]", "10.0.2.0/26 via [192.0.2.2]", "10.0.3.0/26 foreign")
	if c := r.Counts(); strings.Contains(c.LastError, "unreachable") || !strings.Contains(c.LastError, "10.0.3.0/26") || c.LastErrorAt.IsZero() {
		t.Errorf("Counts() = %+v, want the conflict as the last error, with its time, and the unreachable next hop gone", c)
	}

	// Once the conflict is gone too, a pass over every route clears the
	// last error: it no longer holds.
	f.external(true, withProto(learned("10.0.3.0/26", "192.0.2.9"), 4))
	must(t, r.resync(ctx))
	if c := r.Counts(); c.LastError != "" || !c.LastErrorAt.IsZero() || c.Failures != 2 {
		t.Errorf("Counts() = %+v, want no last error (2 failures counted)", c)
	}
}

func TestReconcilerAppliesEventsHeldDuringRead(t *testing.T) {
	ctx := t.Context()
	f := newFakeKernel(learned("10.0.1.0/26", "192.0.2.2"))
	r := newTestReconciler(t, f)
	must(t, r.Upsert(pfx("10.0.1.0/26"), addrs("192.0.2.2")))
	// The route goes after list copied the table but before the read ends.
	f.onList = func() {
		f.onList = nil
		f.external(true, learned("10.0.1.0/26", "192.0.2.2"))
	}
	must(t, r.resync(ctx))
	wantTable(t, f, "10.0.1.0/26 via [192.0.2.2]")
}

func TestReconcilerRejectsBadInput(t *testing.T) {
	r := newReconciler(newFakeKernel(), nil, settings{})
	if err := r.Upsert(netip.Prefix{}, addrs("192.0.2.2")); err == nil {
		t.Error("Upsert accepted an invalid prefix")
	}
	if err := r.Upsert(pfx("10.0.1.0/26"), nil); err == nil {
		t.Error("Upsert accepted no next hops")
	}
	err := r.setRoutes(map[netip.Prefix][]netip.Addr{
		pfx("10.0.1.0/26"): addrs("2001:db8::1"),
		pfx("10.0.2.0/26"): addrs("192.0.2.2"),
	})
	if err == nil {
		t.Error("SetRoutes accepted a next hop of the other family")
	}
	if c := r.Counts(); c.Desired != 1 {
		t.Errorf("Desired = %d, want the one valid route", c.Desired)
	}
}

// TestRunCoalesces checks that a burst of changes reaches the kernel in a
// few writes, and that Sync and drift repair work through Run.
func TestRunCoalesces(t *testing.T) {
	f := newFakeKernel()
	r := newReconciler(f, nil, settings{debounce: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	must(t, r.flush(ctx)) // Run has read the kernel
	const n = 1000
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)
		must(t, r.Upsert(p, addrs("192.0.2.2")))
	}
	waitFor(t, func() bool { return r.Counts().Routes == n })
	if got := r.Counts().RoundTrips; got > 3 {
		t.Errorf("%d routes took %d applies, want them coalesced", n, got)
	}
	f.external(true, learned("10.1.0.7/32", "192.0.2.2"))
	waitFor(t, func() bool { return len(f.table()) == n })
	must(t, r.flush(ctx))
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReconcilerReportsPasses: every pass is told to onPass, a resync as a
// full one.
func TestReconcilerReportsPasses(t *testing.T) {
	ctx := t.Context()
	f := newFakeKernel()
	var passes []Pass
	r := newReconciler(f, nil, settings{onPass: func(p Pass) { passes = append(passes, p) }})
	must(t, r.resync(ctx))
	must(t, r.setRoutes(map[netip.Prefix][]netip.Addr{pfx("10.0.1.0/26"): addrs("192.0.2.2")}))
	must(t, r.reconcile(ctx, false))
	if len(passes) != 2 || !passes[0].Full || passes[1].Full || passes[1].Writes != 1 || passes[1].Failed != 0 {
		t.Errorf("passes = %+v, want a full one with no write, then one with one write", passes)
	}
	for _, p := range passes {
		if p.Duration <= 0 {
			t.Errorf("pass %+v has no duration", p)
		}
	}
}
