package gobgp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/speakertest"
)

func TestAdvertiseWithdrawAndStatus(t *testing.T) {
	l := newLab(t)
	a, b := l.node("a", nil), l.node("b", nil)
	a.setPeers(b.peer(nil))
	b.setPeers(a.peer(nil))
	a.waitConverged()

	b.advertise("10.244.1.0/26 via "+b.addr.String(), "fd00:10:244::40/122 via fd00::b")
	a.advertise("10.244.0.0/26 via " + a.addr.String())
	a.waitRoute("10.244.1.0/26", b.addr.String())
	a.waitRoute("fd00:10:244::40/122", "fd00::b") // IPv6 over the IPv4 session, with its IPv6 next hop
	b.waitRoute("10.244.0.0/26", a.addr.String())

	st := a.status("b", func(st bgp.PeerStatus) bool { return established(st) && st.Received == 2 && st.Advertised == 1 })
	want := bgp.PeerStatus{Name: "b", Address: b.addr, ASN: meshASN, State: bgp.StateEstablished, Received: 2, Accepted: 2, Advertised: 1}
	st.Uptime = 0
	if diff := cmp.Diff(want, st, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("a's status of b (-want +got):\n%s", diff)
	}

	// A new next hop replaces the old; a prefix left out is withdrawn.
	b.advertise("10.244.1.0/26 via 127.0.0.99")
	a.waitRoute("10.244.1.0/26", "127.0.0.99")
	a.waitRoute("fd00:10:244::40/122")
	b.advertise()
	a.waitRoute("10.244.1.0/26")
}

func TestECMPAndOwnBlockOverlap(t *testing.T) {
	l := newLab(t)
	a, b, c := l.node("a", nil), l.node("b", nil), l.node("c", nil)
	a.setPeers(b.peer(nil), c.peer(nil))
	b.setPeers(a.peer(nil), c.peer(nil))
	c.setPeers(a.peer(nil), b.peer(nil))

	b.advertise("10.244.7.0/26 via " + b.addr.String())
	c.advertise("10.244.7.0/26 via " + c.addr.String())
	a.waitRoute("10.244.7.0/26", b.addr.String(), c.addr.String())

	// b announces the block itself, so it rejects c's announcement of it.
	st := b.status("c", func(st bgp.PeerStatus) bool { return st.Rejected == 1 })
	if st.Received != 1 || st.Accepted != 0 {
		t.Errorf("b's status of c = %+v, want 1 received, 0 accepted, 1 rejected", st)
	}
	if b.view.everSeen("10.244.7.0/26") {
		t.Errorf("b learned its own block from c")
	}

	c.advertise()
	a.waitRoute("10.244.7.0/26", b.addr.String())
}

func TestMeshMembership(t *testing.T) {
	l := newLab(t)
	a, b, c := l.node("a", nil), l.node("b", nil), l.node("c", nil)
	a.setPeers(b.peer(nil))
	b.setPeers(a.peer(nil))
	c.setPeers(a.peer(nil))
	b.advertise("10.244.2.0/26 via " + b.addr.String())
	c.advertise("10.244.3.0/26 via " + c.addr.String())
	a.waitRoute("10.244.2.0/26", b.addr.String())

	a.setPeers(b.peer(nil), c.peer(nil)) // c joins
	a.waitRoute("10.244.3.0/26", c.addr.String())

	a.setPeers(c.peer(nil)) // b leaves
	a.waitRoute("10.244.2.0/26")
	a.waitRoute("10.244.3.0/26", c.addr.String())
	all, err := a.sp.Status(t.Context())
	if err != nil || len(all) != 1 || all[0].Name != "c" {
		t.Errorf("a's Status() = %+v, %v; want c only", all, err)
	}
}

func TestImportPolicy(t *testing.T) {
	l := newLab(t)
	a := l.node("a", nil)
	b := l.node("b", nil)
	tor := l.node("tor", func(c *bgp.Config) { c.ASN = 65001 })
	edge := l.node("edge", func(c *bgp.Config) { c.ASN = 65002 })
	a.setPeers(b.peer(nil),
		tor.peer(func(p *bgp.Peer) { p.Mesh = false }),
		edge.peer(func(p *bgp.Peer) {
			p.Mesh = false
			p.Import = bgp.ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, AllowDefault: true}
		}))
	b.setPeers(a.peer(nil))
	tor.setPeers(a.peer(func(p *bgp.Peer) { p.Mesh = false }))
	edge.setPeers(a.peer(func(p *bgp.Peer) { p.Mesh = false }))
	a.advertise("10.244.0.0/26 via " + a.addr.String())

	b.advertise("10.244.3.0/26 via "+b.addr.String(), "10.99.0.0/24 via "+b.addr.String()) // mesh: pools only
	tor.advertise(
		"10.244.4.0/26 via "+tor.addr.String(),  // inside the pools: accepted
		"0.0.0.0/0 via "+tor.addr.String(),      // default route without AllowDefault
		"10.244.0.0/24 via "+tor.addr.String(),  // contains our block
		"10.244.0.16/28 via "+tor.addr.String(), // inside our block
	)
	edge.advertise(
		"0.0.0.0/0 via "+edge.addr.String(),     // AllowDefault
		"10.99.1.0/24 via "+edge.addr.String(),  // inside Allow
		"10.244.5.0/26 via "+edge.addr.String(), // Allow replaces the pools
	)

	a.waitRoute("10.244.3.0/26", b.addr.String())
	a.waitRoute("10.244.4.0/26", tor.addr.String())
	a.waitRoute("0.0.0.0/0", edge.addr.String())
	a.waitRoute("10.99.1.0/24", edge.addr.String())
	for peer, rejected := range map[string]uint64{"b": 1, "tor": 3, "edge": 1} {
		st := a.status(peer, func(st bgp.PeerStatus) bool { return st.Rejected == rejected })
		if st.Accepted+st.Rejected != st.Received {
			t.Errorf("a's status of %s = %+v: accepted + rejected != received", peer, st)
		}
	}
	for _, p := range []string{"10.99.0.0/24", "10.244.0.0/24", "10.244.0.16/28", "10.244.5.0/26"} {
		if a.view.everSeen(p) {
			t.Errorf("a learned %s, which its import policy rejects", p)
		}
	}

	// A rejected prefix is logged once per peer, however often it comes.
	tor.advertise("10.244.4.0/26 via "+tor.addr.String(), "0.0.0.0/0 via 127.0.0.99", "10.244.8.0/26 via "+tor.addr.String())
	a.waitRoute("10.244.8.0/26", tor.addr.String())
	if n := a.logs.count("bgp route rejected", "peer=tor", "prefix=0.0.0.0/0"); n != 1 {
		t.Errorf("rejection of tor's 0.0.0.0/0 logged %d times, want 1", n)
	}
	a.status("tor", func(st bgp.PeerStatus) bool { return st.Rejected == 1 }) // the overlaps are withdrawn now
}

func TestPrefixLimit(t *testing.T) {
	// With graceful restart, GoBGP takes the session it shuts down for the
	// prefix limit for a restarting peer and keeps its routes as stale.
	noGR := func(c *bgp.Config) { c.GracefulRestart.Enabled = false }
	l := newLab(t)
	a, b := l.node("a", noGR), l.node("b", noGR)
	a.setPeers(b.peer(func(p *bgp.Peer) { p.MaxPrefixes = 2 }))
	b.setPeers(a.peer(nil))
	a.status("b", established)
	b.advertise("10.244.1.0/26 via "+b.addr.String(), "10.244.2.0/26 via "+b.addr.String(), "10.244.3.0/26 via "+b.addr.String())
	a.status("b", func(st bgp.PeerStatus) bool { return st.State == bgp.StatePrefixLimit })
	a.waitRoute("10.244.1.0/26")
	a.waitRoute("10.244.2.0/26")

	// One warning says so, however many UPDATEs came over the limit. It
	// follows GoBGP's event, which may come after the state changed.
	for deadline := time.Now().Add(10 * time.Second); a.logs.count("WARN", "prefix limit") == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.logs.count("WARN", "prefix limit"); n != 1 {
		t.Errorf("the session's shutdown for its prefix limit logged %d warnings, want 1", n)
	}

	// A new limit brings the session back.
	a.setPeers(b.peer(func(p *bgp.Peer) { p.MaxPrefixes = 3 }))
	a.waitRoute("10.244.3.0/26", b.addr.String())
	a.status("b", func(st bgp.PeerStatus) bool { return established(st) && st.Received == 3 })
}

// TestAcceptedCountedAtImport: rejections are counted as routes are
// imported, so a session that has just come up does not show rejected routes
// as accepted (they were recounted every 2 s).
func TestAcceptedCountedAtImport(t *testing.T) {
	l := newLab(t)
	a := l.node("a", nil)
	b := l.node("b", func(c *bgp.Config) { c.ASN = 65001 })
	a.advertise("10.244.0.0/26 via " + a.addr.String())
	b.advertise(
		"10.244.1.0/26 via "+b.addr.String(), // accepted
		"10.244.2.0/26 via "+b.addr.String(), // accepted
		"10.99.0.0/24 via "+b.addr.String(),  // outside the pools
		"0.0.0.0/0 via "+b.addr.String(),     // the default route
		"10.244.0.0/26 via "+b.addr.String(), // a's own block, echoed
	)
	a.setPeers(b.peer(func(p *bgp.Peer) { p.Mesh = false }))
	b.setPeers(a.peer(func(p *bgp.Peer) { p.Mesh = false }))
	// Converged: a has b's End-of-RIB, which comes after all of b's routes,
	// and has handled every event before it.
	a.waitConverged()
	all, err := a.sp.Status(t.Context())
	if err != nil || len(all) != 1 {
		t.Fatalf("a's Status() = %+v, %v", all, err)
	}
	st := all[0]
	st.Uptime = 0
	want := bgp.PeerStatus{
		Name: "b", Address: b.addr, ASN: 65001, State: bgp.StateEstablished, Received: 5, Accepted: 2, Rejected: 3, Advertised: 1,
		RejectedBy: map[string]uint64{bgp.RejectOutsidePools: 1, bgp.RejectDefault: 1, bgp.RejectOwnBlock: 1},
	}
	if diff := cmp.Diff(want, st, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("a's status of b as soon as converged (-want +got):\n%s", diff)
	}

	// Each cause is logged once: a warning for what b should not send, an
	// info line for a's own block coming back.
	b.advertise(
		"10.244.1.0/26 via "+b.addr.String(),
		"10.99.1.0/24 via "+b.addr.String(), // outside the pools, again
		"10.244.0.0/26 via "+b.addr.String(),
		"10.244.3.0/26 via "+b.addr.String(),
	)
	a.waitRoute("10.244.3.0/26", b.addr.String())
	for _, c := range []struct {
		parts []string
		want  int
	}{
		{[]string{"WARN", "bgp route rejected", "peer=b", "outside the pod pools"}, 1},
		{[]string{"WARN", "bgp route rejected", "peer=b", "default route"}, 1},
		{[]string{"WARN", "prefix=10.244.0.0/26"}, 0},
		{[]string{"INFO", "our own routes back", "peer=b", "prefix=10.244.0.0/26"}, 1},
	} {
		if n := a.logs.count(c.parts...); n != c.want {
			t.Errorf("%d log lines with %q, want %d", n, c.parts, c.want)
		}
	}
	a.status("b", func(st bgp.PeerStatus) bool { return st.Received == 4 && st.Rejected == 2 && st.Accepted == 2 })
}

func TestPasswordAndRouteReflector(t *testing.T) {
	l := newLab(t)
	rr := l.node("rr", func(c *bgp.Config) { c.RouteReflector.Enabled = true })
	a, b := l.node("a", nil), l.node("b", nil)
	client := func(p *bgp.Peer) { p.RRClient, p.Password = true, "s3cret" }
	rr.setPeers(a.peer(client), b.peer(client))
	a.setPeers(rr.peer(func(p *bgp.Peer) { p.Password = "s3cret" }))
	b.setPeers(rr.peer(func(p *bgp.Peer) { p.Password = "s3cret"; p.Passive = true }))

	a.advertise("10.244.1.0/26 via " + a.addr.String())
	b.waitRoute("10.244.1.0/26", a.addr.String()) // reflected, next hop unchanged
	rr.waitRoute("10.244.1.0/26", a.addr.String())
}

func TestGracefulRestart(t *testing.T) {
	l := newLab(t)
	a, b, c := l.node("a", nil), l.node("b", nil), l.node("c", nil)
	b2 := l.successor(b)
	a.setPeers(b.peer(nil), c.peer(nil))
	b.setPeers(a.peer(nil), c.peer(nil))
	c.setPeers(a.peer(nil), b.peer(nil))
	b.advertise("10.244.1.0/26 via "+b.addr.String(), "10.244.2.0/26 via "+b.addr.String())
	c.advertise("10.244.3.0/26 via " + c.addr.String())
	a.waitRoute("10.244.1.0/26", b.addr.String())
	a.waitRoute("10.244.2.0/26", b.addr.String())
	a.waitRoute("10.244.3.0/26", c.addr.String())
	a.waitConverged()

	// A graceful stop leaves b's routes at a, as stale. (GoBGP marks them
	// stale by writing to paths it has handed out before: wait until nobody
	// reads them, or the race detector reports GoBGP's race.)
	a.quiesce()
	c.quiesce()
	stop(t, b, true)
	a.status("b", func(st bgp.PeerStatus) bool { return !established(st) })
	c.advertise("10.244.3.0/26 via "+c.addr.String(), "10.244.200.0/26 via "+c.addr.String())
	a.waitRoute("10.244.200.0/26", c.addr.String()) // a has handled every event before this one
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26"} {
		if got := a.view.get(netip.MustParsePrefix(p)); len(got) != 1 || got[0] != b.addr {
			t.Errorf("after b's graceful stop, a's route for %s is via %v, want via %v", p, got, b.addr)
		}
	}

	// b comes back restarting, without one of its prefixes: a keeps the
	// other, and drops the stale one once b has sent End-of-RIB.
	b2.setPeers(a.peer(nil), c.peer(nil))
	b2.advertise("10.244.1.0/26 via " + b.addr.String())
	b2.waitConverged()
	a.waitRoute("10.244.2.0/26")
	a.waitRoute("10.244.1.0/26", b.addr.String())
	b2.waitRoute("10.244.3.0/26", c.addr.String())

	// A stop that is not graceful withdraws at once.
	stop(t, c, false)
	a.waitRoute("10.244.3.0/26")
	a.waitRoute("10.244.200.0/26")
}

func stop(t *testing.T, n *node, graceful bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := n.sp.Stop(ctx, graceful); err != nil {
		t.Fatalf("%s: Stop(graceful=%v): %v", n.name, graceful, err)
	}
}

func TestAPIListen(t *testing.T) {
	l := newLab(t)
	api := netip.AddrPortFrom(l.addr(250), apiPort).String() // on no node's address
	a := l.node("a", func(c *bgp.Config) { c.APIListen = api })
	waitFor(t, "gRPC API on "+api, func() string {
		conn, err := net.Dial("tcp", api)
		if err != nil {
			return err.Error()
		}
		conn.Close()
		return ""
	})
	stop(t, a, false)
	if conn, err := net.Dial("tcp", api); err == nil {
		conn.Close()
		t.Errorf("gRPC API still listening on %s after Stop", api)
	}
}

func TestContract(t *testing.T) {
	speakertest.Run(t, func(t *testing.T, cfg bgp.Config) bgp.Speaker {
		s, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFlapsCounted: a session that drops and comes back counts one flap on
// the side that stayed, kept across the drop.
func TestFlapsCounted(t *testing.T) {
	l := newLab(t)
	a, b := l.node("a", nil), l.node("b", nil)
	a.setPeers(b.peer(nil))
	b.setPeers(a.peer(nil))
	if st := a.status("b", established); st.Flaps != 0 {
		t.Errorf("flaps after the first establishment = %d, want 0", st.Flaps)
	}
	b.setPeers() // b sends a a Cease
	// The counter follows GoBGP's state event, which may come a moment
	// after the state Status reads: wait for the drop to be counted.
	a.status("b", func(st bgp.PeerStatus) bool { return !established(st) && st.Flaps >= 1 })
	if st := a.status("b", func(st bgp.PeerStatus) bool { return !established(st) }); st.Flaps != 1 {
		t.Errorf("flaps once the session dropped = %d, want 1", st.Flaps)
	}
	b.setPeers(a.peer(nil))
	if st := a.status("b", established); st.Flaps != 1 {
		t.Errorf("flaps once the session is back = %d, want 1", st.Flaps)
	}
}
