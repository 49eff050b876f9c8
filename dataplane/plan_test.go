package dataplane

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/internal/hopset"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, addr(s))
	}
	return out
}

// learned is a route of ours over gateways, as the kernel lists it.
func learned(p string, gws ...string) kernelRoute {
	return kernelRoute{key: keyOf(pfx(p)), protocol: routeProtocol, unicast: true, nextHops: addrs(gws...)}
}

func blackhole(p string) kernelRoute {
	return kernelRoute{key: keyOf(pfx(p)), protocol: routeProtocol, blackhole: true}
}

// podRoute is what the CNI plugin installs: our protocol, a veth, no gateway.
func podRoute(p string) kernelRoute {
	return kernelRoute{key: keyOf(pfx(p)), protocol: routeProtocol, unicast: true, oif: 7}
}

func withProto(r kernelRoute, proto int) kernelRoute { r.protocol = proto; return r }
func withMetric(r kernelRoute, m uint32) kernelRoute { r.key.metric = m; return r }

// opString renders an op for diffs: "add 10.0.0.0/26 via [192.0.2.2]".
func opString(o op) string {
	s := o.kind.String() + " " + o.key.String()
	if o.blackhole {
		return s + " blackhole"
	}
	return s + " via " + addrList(o.nextHops)
}

func addrList(a []netip.Addr) string {
	s := "["
	for i, x := range a {
		if i > 0 {
			s += " "
		}
		s += x.String()
	}
	return s + "]"
}

func TestOwned(t *testing.T) {
	for _, tc := range []struct {
		name  string
		route kernelRoute
		want  bool
	}{
		{"learned route", learned("10.0.1.0/26", "192.0.2.2"), true},
		{"ECMP route", learned("10.0.1.0/26", "192.0.2.2", "192.0.2.3"), true},
		{"blackhole", blackhole("10.0.0.0/26"), true},
		{"CNI pod route", podRoute("10.0.0.5/32"), false},
		{"CNI IPv6 pod route", podRoute("2001:db8:0:1::5/128"), false},
		{"static route", withProto(learned("10.0.1.0/26", "192.0.2.2"), 4), false},
		{"bgp blackhole", withProto(blackhole("10.0.0.0/26"), 186), false},
		{"unreachable", kernelRoute{key: keyOf(pfx("10.0.0.0/26")), protocol: routeProtocol}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.route.owned(); got != tc.want {
				t.Errorf("owned() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidNextHops(t *testing.T) {
	got, err := validNextHops(pfx("10.0.1.0/26"), addrs("192.0.2.3", "192.0.2.2", "::ffff:192.0.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(addrs("192.0.2.2", "192.0.2.3"), got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("next hops (-want +got):\n%s", diff)
	}
	for _, bad := range [][]netip.Addr{nil, addrs("2001:db8::1"), addrs("0.0.0.0"), addrs("169.254.1.1"), {{}}} {
		if _, err := validNextHops(pfx("10.0.1.0/26"), bad); err == nil {
			t.Errorf("validNextHops(%v) accepted", bad)
		}
	}
	if _, err := validNextHops(pfx("2001:db8:1::/64"), addrs("fe80::1")); err == nil {
		t.Error("link-local IPv6 next hop accepted")
	}
}

func TestPlan(t *testing.T) {
	type state struct {
		routes     map[string][]string
		blackholes []string
		named      []string
		converged  bool
	}
	for _, tc := range []struct {
		name      string
		want      state
		kernel    []kernelRoute
		ops       []string
		conflicts []string
	}{
		{name: "nothing"},
		{
			name: "install learned, ECMP, blackhole, IPv6",
			want: state{
				routes:     map[string][]string{"10.0.1.0/26": {"192.0.2.2"}, "10.0.2.0/26": {"192.0.2.2", "192.0.2.3"}, "2001:db8:1::/64": {"2001:db8::2"}},
				blackholes: []string{"10.0.0.0/26"},
			},
			ops: []string{
				"add 10.0.0.0/26 blackhole",
				"add 10.0.1.0/26 via [192.0.2.2]",
				"add 10.0.2.0/26 via [192.0.2.2 192.0.2.3]",
				"add 2001:db8:1::/64 via [2001:db8::2]",
			},
		},
		{
			name:   "in place, next hops in another order",
			want:   state{routes: map[string][]string{"10.0.2.0/26": {"192.0.2.2", "192.0.2.3"}}},
			kernel: []kernelRoute{learned("10.0.2.0/26", "192.0.2.3", "192.0.2.2")},
		},
		{
			name:   "next hop changed",
			want:   state{routes: map[string][]string{"10.0.2.0/26": {"192.0.2.2", "192.0.2.4"}}},
			kernel: []kernelRoute{learned("10.0.2.0/26", "192.0.2.3", "192.0.2.2")},
			ops:    []string{"replace 10.0.2.0/26 via [192.0.2.2 192.0.2.4]"},
		},
		{
			name:   "a block becomes local: blackhole wins over a learned route",
			want:   state{routes: map[string][]string{"10.0.0.0/26": {"192.0.2.2"}}, blackholes: []string{"10.0.0.0/26"}},
			kernel: []kernelRoute{learned("10.0.0.0/26", "192.0.2.2")},
			ops:    []string{"replace 10.0.0.0/26 blackhole"},
		},
		{
			name:   "stale routes stay until converged",
			kernel: []kernelRoute{learned("10.0.1.0/26", "192.0.2.2"), blackhole("10.0.0.0/26")},
		},
		{
			name:   "stale routes go once converged, deletes last",
			want:   state{routes: map[string][]string{"10.0.3.0/26": {"192.0.2.2"}}, converged: true},
			kernel: []kernelRoute{learned("10.0.1.0/26", "192.0.2.3", "192.0.2.2"), blackhole("10.0.0.0/26")},
			ops: []string{
				"add 10.0.3.0/26 via [192.0.2.2]",
				"delete 10.0.0.0/26 blackhole",
				"delete 10.0.1.0/26 via [192.0.2.3 192.0.2.2]",
			},
		},
		{
			name:   "a withdrawn prefix goes before convergence",
			want:   state{named: []string{"10.0.1.0/26"}},
			kernel: []kernelRoute{learned("10.0.1.0/26", "192.0.2.2"), learned("10.0.4.0/26", "192.0.2.2")},
			ops:    []string{"delete 10.0.1.0/26 via [192.0.2.2]"},
		},
		{
			name:   "pod routes are never ours, even converged",
			want:   state{blackholes: []string{"10.0.0.0/26"}, converged: true},
			kernel: []kernelRoute{podRoute("10.0.0.5/32"), podRoute("2001:db8:0:1::5/128"), blackhole("10.0.0.0/26")},
		},
		{
			name: "other protocols are never touched",
			want: state{routes: map[string][]string{"10.0.1.0/26": {"192.0.2.2"}}, converged: true},
			kernel: []kernelRoute{
				withProto(learned("10.0.1.0/26", "192.0.2.9"), 4),
				withProto(learned("10.0.9.0/24", "192.0.2.9"), 186),
			},
			conflicts: []string{"10.0.1.0/26"},
		},
		{
			name:   "a foreign route at another metric is no conflict",
			want:   state{routes: map[string][]string{"10.0.1.0/26": {"192.0.2.2"}}},
			kernel: []kernelRoute{withMetric(withProto(learned("10.0.1.0/26", "192.0.2.9"), 4), 100)},
			ops:    []string{"add 10.0.1.0/26 via [192.0.2.2]"},
		},
		{
			name:   "ours at another metric is stale",
			want:   state{routes: map[string][]string{"2001:db8:1::/64": {"2001:db8::2"}}, converged: true},
			kernel: []kernelRoute{withMetric(learned("2001:db8:1::/64", "2001:db8::2"), 100)},
			ops:    []string{"add 2001:db8:1::/64 via [2001:db8::2]", "delete 2001:db8:1::/64 metric 100 via [2001:db8::2]"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDesired()
			for p, nhs := range tc.want.routes {
				d.routes[pfx(p)] = hopset.Make(addrs(nhs...))
				d.name(pfx(p))
			}
			for _, p := range tc.want.blackholes {
				d.blackholes[pfx(p)] = struct{}{}
				d.name(pfx(p))
			}
			for _, p := range tc.want.named {
				d.name(pfx(p))
			}
			if tc.want.converged {
				d.markConverged()
			}
			v := newView(tc.kernel)
			ops, conflicts := plan(allKeys(&d, &v), &d, &v, nil)
			var gotOps, gotConflicts []string
			for _, o := range ops {
				gotOps = append(gotOps, opString(o))
			}
			for _, k := range conflicts {
				gotConflicts = append(gotConflicts, k.String())
			}
			if diff := cmp.Diff(tc.ops, gotOps); diff != "" {
				t.Errorf("ops (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.conflicts, gotConflicts); diff != "" {
				t.Errorf("conflicts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestViewApply(t *testing.T) {
	ours, static := learned("10.0.1.0/26", "192.0.2.2"), withProto(learned("10.0.1.0/26", "192.0.2.9"), 4)
	for _, tc := range []struct {
		name        string
		events      []routeEvent
		ours, alien bool // what the view holds at the key afterwards
	}{
		{"ours added", []routeEvent{{route: ours}}, true, false},
		{"ours deleted", []routeEvent{{route: ours}, {deleted: true, route: ours}}, false, false},
		{"a foreign route prepended", []routeEvent{{route: ours}, {route: static}}, true, true},
		{"ours replaced by a foreign route", []routeEvent{{route: ours}, {route: static, replace: true}}, false, true},
		{"a foreign route replaced by ours", []routeEvent{{route: static}, {route: ours, replace: true}}, true, false},
		{"a pod route is foreign", []routeEvent{{route: podRoute("10.0.1.0/26")}}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newView(nil)
			for _, ev := range tc.events {
				v.apply(ev)
			}
			_, gotOurs := v.ours[ours.key]
			_, gotAlien := v.foreign[ours.key]
			if gotOurs != tc.ours || gotAlien != tc.alien {
				t.Errorf("ours %v, foreign %v; want %v, %v", gotOurs, gotAlien, tc.ours, tc.alien)
			}
		})
	}
}

// TestPlanResolvesNextHops: a next hop behind the underlay's router is
// written as that router's address; a route that already goes there is left
// alone; two next hops behind one router make one path.
func TestPlanResolvesNextHops(t *testing.T) {
	remote1, remote2, tor := netip.MustParseAddr("10.0.2.2"), netip.MustParseAddr("10.0.3.2"), netip.MustParseAddr("10.0.1.1")
	direct := netip.MustParseAddr("10.0.1.9")
	resolve := func(a netip.Addr) netip.Addr {
		if a == direct {
			return a
		}
		return tor
	}
	p1, p2 := netip.MustParsePrefix("10.244.0.64/26"), netip.MustParsePrefix("10.244.0.128/26")
	d := newDesired()
	d.routes[p1] = hopset.Make([]netip.Addr{remote1, remote2})
	d.routes[p2] = hopset.Make([]netip.Addr{direct})
	v := newView(nil)
	ops, _ := plan(allKeys(&d, &v), &d, &v, resolve)
	if len(ops) != 2 || !slices.Equal(ops[0].nextHops, []netip.Addr{tor}) || !slices.Equal(ops[1].nextHops, []netip.Addr{direct}) {
		t.Fatalf("ops %+v: want %s via %s, %s via %s", ops, p1, tor, p2, direct)
	}
	for _, o := range ops {
		v.done(o)
	}
	if ops, _ := plan(allKeys(&d, &v), &d, &v, resolve); len(ops) != 0 {
		t.Fatalf("second pass wrote %+v: want nothing", ops)
	}
}
