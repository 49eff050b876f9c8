package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/test/harness"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// ipRoutes lists n's main-table routes as `ip -o route show` prints them,
// whitespace squeezed, with the arguments after "show" (e.g. "proto", "75").
func ipRoutes(tb testing.TB, n *harness.NetNS, family string, filter ...string) []string {
	tb.Helper()
	out := n.MustExec(tb, append([]string{"ip", "-o", family, "route", "show", "table", "main"}, filter...)...)
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.Join(strings.Fields(strings.ReplaceAll(line, `\`, " ")), " ")
		if line != "" {
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	return lines
}

// ours lists n's main-table routes of protocol 75, sorted.
func ours(tb testing.TB, n *harness.NetNS) []string {
	tb.Helper()
	var out []string
	for _, r := range append(ipRoutes(tb, n, "-4"), ipRoutes(tb, n, "-6")...) {
		if strings.Contains(r, " proto 75") {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out
}

func wantRoutes(tb testing.TB, what string, got, want []string) {
	tb.Helper()
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		tb.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

// Routes of the tests as `ip -o route` prints them.
const (
	v4Blackhole = "blackhole 10.0.0.0/26 proto 75"
	v6Blackhole = "blackhole 2001:db8:0:1::/64 dev lo proto 75 metric 1024 pref medium"
	v4Route     = "10.0.1.0/26 via 192.0.2.2 dev up0 proto 75"
	v4ECMP      = "10.0.2.0/26 proto 75 nexthop via 192.0.2.2 dev up0 weight 1 nexthop via 192.0.2.3 dev up0 weight 1"
	v6ECMP      = "2001:db8:0:2::/64 proto 75 metric 1024 pref medium nexthop via 2001:db8::2 dev up0 weight 1 nexthop via 2001:db8::3 dev up0 weight 1"
)

// wantSome installs the tests' usual routes into r.
func wantSome(t *testing.T, r *Reconciler) {
	t.Helper()
	must(t, r.SetBlackholes([]netip.Prefix{pfx("10.0.0.0/26"), pfx("2001:db8:0:1::/64")}))
	must(t, r.setRoutes(map[netip.Prefix][]netip.Addr{
		pfx("10.0.1.0/26"):       addrs("192.0.2.2"),
		pfx("10.0.2.0/26"):       addrs("192.0.2.3", "192.0.2.2"),
		pfx("2001:db8:0:2::/64"): addrs("2001:db8::2", "2001:db8::3"),
	}))
}

func TestPrivilegedInstall(t *testing.T) {
	n := newNodeNS(t)
	r, _ := startReconciler(t, n)
	wantSome(t, r)
	// One route in the same batch cannot go in: only it is reported.
	must(t, r.Upsert(pfx("10.0.3.0/26"), addrs("198.51.100.1")))
	err := r.flush(t.Context())
	var oe *opError
	if !errors.As(err, &oe) || oe.key.prefix != pfx("10.0.3.0/26") || !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("Sync() = %v, want ENETUNREACH for 10.0.3.0/26 only", err)
	} else {
		t.Logf("the kernel said: %v", err)
	}
	wantRoutes(t, "our routes", ours(t, n), []string{v4Blackhole, v4Route, v4ECMP, v6Blackhole, v6ECMP})
	c := r.Counts()
	if c.Routes != 3 || c.ECMP != 2 || c.Blackholes != 2 || c.Pending != 1 || !strings.Contains(c.LastError, "10.0.3.0/26") {
		t.Errorf("Counts() = %+v", c)
	}

	// Withdrawals go at once; a next-hop change replaces the route in place.
	r.Delete(pfx("10.0.3.0/26"))
	r.Delete(pfx("2001:db8:0:2::/64"))
	must(t, r.Upsert(pfx("10.0.2.0/26"), addrs("192.0.2.4")))
	must(t, r.SetBlackholes([]netip.Prefix{pfx("10.0.0.0/26")}))
	must(t, r.flush(t.Context()))
	wantRoutes(t, "our routes", ours(t, n), []string{v4Blackhole, v4Route, "10.0.2.0/26 via 192.0.2.4 dev up0 proto 75"})
}

func TestPrivilegedPodRoutesCoexistWithBlackhole(t *testing.T) {
	n := newNodeNS(t)
	// What the CNI plugin makes: a veth and /32, /128 routes of our protocol.
	n.MustExec(t, "ip", "link", "add", "fln0test", "type", "veth", "peer", "name", "pod0")
	n.MustExec(t, "ip", "link", "set", "fln0test", "up")
	n.MustExec(t, "ip", "route", "add", "10.0.0.5/32", "dev", "fln0test", "proto", "75", "scope", "link")
	n.MustExec(t, "ip", "-6", "route", "add", "2001:db8:0:1::5/128", "dev", "fln0test", "proto", "75")
	pods := []string{
		"10.0.0.5 dev fln0test proto 75 scope link linkdown",
		"2001:db8:0:1::5 dev fln0test proto 75 metric 1024 linkdown pref medium",
	}

	r, _ := startReconciler(t, n)
	r.MarkConverged()
	must(t, r.SetBlackholes([]netip.Prefix{pfx("10.0.0.0/26"), pfx("2001:db8:0:1::/64"), pfx("10.0.0.5/32")}))
	err := r.flush(t.Context())
	if !errors.Is(err, ErrConflict) {
		t.Errorf("Sync() = %v, want a conflict over the pod's /32", err)
	}
	wantRoutes(t, "our routes", ours(t, n), append([]string{v4Blackhole, v6Blackhole}, pods...))
	if out := n.MustExec(t, "ip", "route", "get", "10.0.0.5"); !strings.Contains(out, "dev fln0test") {
		t.Errorf("ip route get 10.0.0.5 = %q, want the pod's veth", out)
	}

	must(t, r.SetBlackholes(nil))
	must(t, r.flush(t.Context()))
	wantRoutes(t, "our routes", ours(t, n), pods)
}

func TestPrivilegedRepairsDrift(t *testing.T) {
	n := newNodeNS(t)
	r, _ := startReconciler(t, n)
	wantSome(t, r)
	must(t, r.flush(t.Context()))
	all := []string{v4Blackhole, v4Route, v4ECMP, v6Blackhole, v6ECMP}
	slices.Sort(all)

	for _, tamper := range [][]string{
		{"ip", "route", "del", "10.0.1.0/26", "proto", "75"},
		{"ip", "route", "del", "blackhole", "10.0.0.0/26"},
		{"ip", "-6", "route", "del", "2001:db8:0:2::/64"},
		{"ip", "route", "replace", "10.0.2.0/26", "via", "192.0.2.9", "proto", "75"},
	} {
		n.MustExec(t, tamper...)
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Equal(ours(t, n), all) {
			if time.Now().After(deadline) {
				wantRoutes(t, "routes after "+strings.Join(tamper, " "), ours(t, n), all)
				t.FailNow()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wantRoutes(t, "our routes", ours(t, n), all)
	// Each tampering took one write to repair, and is counted as one.
	deadline := time.Now().Add(10 * time.Second)
	for r.Counts().Repairs < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c := r.Counts(); c.Repairs != 4 || c.NetlinkErrors != 0 {
		t.Errorf("Counts() = %+v, want 4 repairs and no netlink error", c)
	}
}

func TestPrivilegedLeavesOtherProtocols(t *testing.T) {
	n := newNodeNS(t)
	foreign := [][]string{
		{"ip", "route", "add", "10.0.9.0/24", "via", "192.0.2.9", "proto", "static"},
		{"ip", "route", "add", "10.0.1.0/26", "via", "192.0.2.9", "proto", "bgp"},
		{"ip", "route", "add", "blackhole", "10.0.8.0/24", "proto", "bgp"},
		{"ip", "-6", "route", "add", "2001:db8:0:2::/64", "via", "2001:db8::9", "proto", "static", "metric", "100"},
		{"ip", "-6", "route", "add", "2001:db8:0:3::/64", "via", "2001:db8::9", "proto", "bgp"},
	}
	for _, args := range foreign {
		n.MustExec(t, args...)
	}
	others := func() []string {
		var out []string
		for _, r := range append(ipRoutes(t, n, "-4"), ipRoutes(t, n, "-6")...) {
			if !strings.Contains(r, "proto 75") && !strings.Contains(r, "proto kernel") {
				out = append(out, r)
			}
		}
		slices.Sort(out)
		return out
	}
	before := others()
	if len(before) != len(foreign) {
		t.Fatalf("foreign routes: %q", before)
	}

	r, _ := startReconciler(t, n)
	r.MarkConverged()
	wantSome(t, r)
	must(t, r.Upsert(pfx("2001:db8:0:3::/64"), addrs("2001:db8::2")))
	if err := r.flush(t.Context()); !errors.Is(err, ErrConflict) {
		t.Errorf("Sync() = %v, want conflicts at 10.0.1.0/26 and 2001:db8:0:3::/64", err)
	}
	if c := r.Counts(); c.Conflicts != 2 {
		t.Errorf("Counts().Conflicts = %d, want 2", c.Conflicts)
	}
	// Ours beside the static IPv6 route of a better metric.
	wantRoutes(t, "our routes", ours(t, n), []string{v4Blackhole, v4ECMP, v6Blackhole, v6ECMP})

	must(t, r.setRoutes(nil))
	must(t, r.SetBlackholes(nil))
	must(t, r.flush(t.Context()))
	wantRoutes(t, "our routes", ours(t, n), nil)
	wantRoutes(t, "other routes", others(), before)
}

func TestPrivilegedRestartKeepsRoutesUntilConverged(t *testing.T) {
	n := newNodeNS(t)
	n.MustExec(t, "ip", "link", "add", "fln0test", "type", "veth", "peer", "name", "pod0")
	n.MustExec(t, "ip", "link", "set", "fln0test", "up")
	n.MustExec(t, "ip", "route", "add", "10.0.0.5/32", "dev", "fln0test", "proto", "75", "scope", "link")
	pod := "10.0.0.5 dev fln0test proto 75 scope link linkdown"

	first, stop := startReconciler(t, n)
	wantSome(t, first)
	must(t, first.flush(t.Context()))
	stop() // Close leaves the routes
	all := []string{v4Blackhole, v4Route, v4ECMP, v6Blackhole, v6ECMP, pod}
	wantRoutes(t, "routes after the first run", ours(t, n), all)

	second, _ := startReconciler(t, n)
	must(t, second.SetBlackholes([]netip.Prefix{pfx("10.0.0.0/26")}))
	must(t, second.Upsert(pfx("10.0.1.0/26"), addrs("192.0.2.2")))
	must(t, second.flush(t.Context()))
	wantRoutes(t, "routes before convergence", ours(t, n), all)
	if c := second.Counts(); c.Stale != 3 || c.Converged {
		t.Errorf("Counts() = %+v, want 3 stale routes", c)
	}

	second.MarkConverged()
	must(t, second.flush(t.Context()))
	wantRoutes(t, "routes after convergence", ours(t, n), []string{v4Blackhole, v4Route, pod})
}

func TestPrivilegedBatchesManyRoutes(t *testing.T) {
	n := newNodeNS(t)
	r, _ := startReconciler(t, n)
	r.MarkConverged()
	must(t, r.flush(t.Context()))
	k := r.k.(*netlinkKernel)
	sendmsgs, events := k.sendmsgs.Load(), k.events.Load()

	const count = 10_000
	must(t, r.setRoutes(hostRoutes(count)))
	must(t, r.flush(t.Context()))
	if got := len(ipRoutes(t, n, "-4", "proto", "75")); got != count {
		t.Fatalf("%d routes in the kernel, want %d", got, count)
	}
	sent, trips := k.sendmsgs.Load()-sendmsgs, k.acks.Load()
	t.Logf("%d routes: %d sendmsg calls, %d acknowledged round trips", count, sent, trips)
	if sent > count/100 || trips > count/100 {
		t.Errorf("%d routes took %d sendmsg calls and %d round trips, want batches", count, sent, trips)
	}
	if got := k.events.Load() - events; got != 0 {
		t.Errorf("%d events of our own writes reached the reconciler, want them filtered", got)
	}
	if c := r.Counts(); c.Routes != count || c.Pending != 0 {
		t.Errorf("Counts() = %+v", c)
	}

	must(t, r.setRoutes(nil))
	must(t, r.flush(t.Context()))
	if got := ipRoutes(t, n, "-4", "proto", "75"); len(got) != 0 {
		t.Errorf("%d routes left after withdrawing all", len(got))
	}
}

// hostRoutes returns count /32 routes in 10.128.0.0/9 via 192.0.2.2.
func hostRoutes(count int) map[netip.Prefix][]netip.Addr {
	routes := make(map[netip.Prefix][]netip.Addr, count)
	gw := addrs("192.0.2.2")
	for i := range count {
		a := netip.AddrFrom4([4]byte{10, 128 + byte(i>>16), byte(i >> 8), byte(i)})
		routes[netip.PrefixFrom(a, 32)] = gw
	}
	return routes
}

// ipBatch is the same routes as iproute2 batch lines: "route add ...".
func ipBatch(verb string, routes map[netip.Prefix][]netip.Addr) string {
	var b strings.Builder
	for p, nh := range routes {
		fmt.Fprintf(&b, "route %s %s via %s proto 75\n", verb, p, nh[0])
	}
	return b.String()
}

// TestPrivilegedReportsEveryRouteOfAFailedBatch refuses a whole batch with a
// receive buffer too small for the error replies: every route must come back
// with an error (its own, or "replies lost"), none as written, and apply must
// not hang waiting for an ack the kernel dropped.
func TestPrivilegedReportsEveryRouteOfAFailedBatch(t *testing.T) {
	n := newNodeNS(t)
	k, err := openKernel(n.NetNS, 0)
	must(t, err)
	defer k.close()
	must(t, k.w.raw.Control(func(fd uintptr) {
		must(t, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1)) // the kernel's minimum
	}))
	var ops []op
	for p := range hostRoutes(2000) {
		ops = append(ops, op{kind: opAdd, key: keyOf(p), nextHops: addrs("198.51.100.1")})
	}
	errs := k.apply(t.Context(), ops)
	lost := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, errRepliesLost):
			lost++
		case !errors.Is(err, syscall.ENETUNREACH):
			t.Fatalf("route %s: error %v, want ENETUNREACH or lost replies", ops[i].key, err)
		}
	}
	t.Logf("%d routes refused, %d of them with lost replies", len(ops), lost)
	if lost == 0 {
		t.Error("no replies lost: the test did not overflow the socket")
	}
}

// TestPrivilegedEventsMatchDump checks that the event parser and the dump
// read every kind of route alike, so events and resyncs agree on ownership.
func TestPrivilegedEventsMatchDump(t *testing.T) {
	n := newNodeNS(t)
	n.MustExec(t, "ip", "link", "add", "fln0test", "type", "veth", "peer", "name", "pod0")
	n.MustExec(t, "ip", "link", "set", "fln0test", "up")
	k, err := openKernel(n.NetNS, 0)
	must(t, err)
	defer k.close()
	var mu sync.Mutex
	var events []kernelRoute
	broken, err := k.subscribe(t.Context(), func(ev routeEvent) {
		mu.Lock()
		defer mu.Unlock()
		if !ev.deleted && !strings.HasPrefix(ev.route.key.prefix.Addr().String(), "fe80") {
			events = append(events, ev.route)
		}
	})
	must(t, err)
	before, err := k.list(t.Context())
	must(t, err)
	for _, args := range [][]string{
		{"ip", "route", "add", "10.0.1.0/26", "via", "192.0.2.2", "proto", "75"},
		{"ip", "route", "add", "10.0.2.0/26", "proto", "75", "nexthop", "via", "192.0.2.3", "nexthop", "via", "192.0.2.2"},
		{"ip", "route", "add", "10.0.3.0/26", "proto", "75", "nexthop", "via", "192.0.2.3", "nexthop", "dev", "up0"},
		{"ip", "route", "add", "blackhole", "10.0.0.0/26", "proto", "75"},
		{"ip", "route", "add", "10.0.0.5/32", "dev", "fln0test", "proto", "75", "scope", "link"},
		{"ip", "route", "add", "10.0.9.0/24", "via", "192.0.2.9", "proto", "static", "metric", "7"},
		{"ip", "route", "add", "default", "via", "192.0.2.9", "proto", "bgp"},
		{"ip", "route", "add", "table", "100", "10.0.4.0/26", "via", "192.0.2.2", "proto", "75"},
		{"ip", "-6", "route", "add", "2001:db8:0:2::/64", "proto", "75", "nexthop", "via", "2001:db8::2", "nexthop", "via", "2001:db8::3"},
		{"ip", "-6", "route", "add", "2001:db8:0:3::/64", "via", "2001:db8::2", "proto", "75"},
		{"ip", "-6", "route", "add", "blackhole", "2001:db8:0:1::/64", "proto", "75"},
		{"ip", "-6", "route", "add", "2001:db8:0:1::5/128", "dev", "fln0test", "proto", "75"},
	} {
		n.MustExec(t, args...)
	}
	after, err := k.list(t.Context())
	must(t, err)
	var added []kernelRoute
	for _, r := range after {
		if !slices.ContainsFunc(before, func(b kernelRoute) bool { return b.key == r.key && b.protocol == r.protocol }) {
			added = append(added, r)
		}
	}
	if len(added) != 11 { // all but the one in table 100
		t.Errorf("the dump found %d new routes, want 11: %+v", len(added), added)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		enough := len(events) >= len(added)
		mu.Unlock()
		if enough {
			break
		}
	}
	select {
	case err := <-broken:
		t.Fatal(err)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	sortRoutes := func(rs []kernelRoute) []string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%s proto %d unicast=%v blackhole=%v owned=%v via %s oif=%v",
				r.key, r.protocol, r.unicast, r.blackhole, r.owned(), addrList(r.nextHops), r.oif != 0))
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff(sortRoutes(added), sortRoutes(events)); diff != "" {
		t.Errorf("events differ from the dump (-dump +events):\n%s", diff)
	}
}

// TestPrivilegedRecursiveNextHop: a next hop in another subnet (an iBGP peer
// behind the underlay's router) is written via that router; when the underlay
// route moves to another router, the route follows it.
func TestPrivilegedRecursiveNextHop(t *testing.T) {
	n := newNodeNS(t)
	n.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.254")
	r, _ := startReconciler(t, n)
	must(t, r.Upsert(pfx("10.0.9.0/26"), addrs("198.51.100.7")))
	want := func(route string) {
		t.Helper()
		waitFor(t, func() bool { return slices.Contains(ours(t, n), route) })
	}
	want("10.0.9.0/26 via 192.0.2.254 dev up0 proto 75")
	n.MustExec(t, "ip", "route", "replace", "198.51.100.0/24", "via", "192.0.2.253")
	want("10.0.9.0/26 via 192.0.2.253 dev up0 proto 75")
	// A next hop on the link stays as it is.
	must(t, r.Upsert(pfx("10.0.9.64/26"), addrs("192.0.2.7")))
	want("10.0.9.64/26 via 192.0.2.7 dev up0 proto 75")
}
