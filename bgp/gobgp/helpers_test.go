package gobgp

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/bgp"
)

// The tests run real GoBGP speakers on loopback (Linux routes all of 127/8
// to lo): this process gets its own 127.P.0.0/16, P drawn at random, each
// test a /24 in it, each node an address in that and the fixed port
// bgpPort. No port is probed and let go for another to take: an address is
// this process's, and within it a node's. The tests wait for conditions with
// a deadline and never assert timings.
//
// GoBGP's StartBgp writes process-wide settings (multipath, best-path
// options) that running servers read, so a speaker must not start while
// another has peers. The lab enforces it: node and successor fail the test
// once any node of the lab has been given peers, and a test's speakers are
// stopped (t.Cleanup) before the next test starts its own.

const (
	meshASN  = 64512
	deadline = 20 * time.Second
	bgpPort  = 1790
	apiPort  = 50051
)

var (
	pools = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}
	nets  atomic.Int32
	// procNet is the second octet of this process's addresses.
	procNet = byte(2 + rand.IntN(250))
)

// lab hands out node addresses for one test.
type lab struct {
	t      *testing.T
	net    int32
	next   int
	peered atomic.Bool // a node of the lab has been given peers
}

// addr returns the lab's address with host part host.
func (l *lab) addr(host int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, procNet, byte(l.net), byte(host)})
}

func newLab(t *testing.T) *lab {
	return &lab{t: t, net: nets.Add(1)}
}

// node is a speaker under test and what it learned.
type node struct {
	t    *testing.T
	lab  *lab
	name string
	addr netip.Addr
	port int
	asn  uint32
	cfg  bgp.Config
	sp   *Speaker
	view *view
	logs *logRecorder
}

// node starts a speaker named name on the lab's next address; mod may change
// its configuration.
func (l *lab) node(name string, mod func(*bgp.Config)) *node {
	l.t.Helper()
	if l.peered.Load() {
		l.t.Fatalf("node %s started after a node had peers: GoBGP's process-wide settings would race", name)
	}
	l.next++
	addr := l.addr(l.next)
	n := &node{t: l.t, lab: l, name: name, addr: addr, port: bgpPort, asn: meshASN}
	n.cfg = bgp.Config{
		ASN:             meshASN,
		RouterID:        addr,
		ListenAddresses: []netip.Addr{addr},
		Pools:           pools,
		Multipath:       true,
		GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: 120 * time.Second},
		ConvergeTimeout: 30 * time.Second,
	}
	if mod != nil {
		mod(&n.cfg)
	}
	n.asn = n.cfg.ASN
	n.start()
	return n
}

// successor starts, in n's place, the speaker n's restart would bring up:
// same name, address and router ID, restarting. It only dials (it cannot
// listen on n's port while n runs), so it must not be given peers before n
// stops. GoBGP keeps settings process-wide, which StartBgp writes: every
// speaker of a test starts before any has peers, this one included.
func (l *lab) successor(n *node) *node {
	l.t.Helper()
	if l.peered.Load() {
		l.t.Fatalf("successor of %s started after a node had peers: GoBGP's process-wide settings would race", n.name)
	}
	s := *n
	s.cfg.ListenPort = -1
	s.cfg.GracefulRestart.Restarting = true
	s.cfg.ConvergeTimeout = 5 * time.Minute // converging must not be the timeout's doing
	s.start()
	return &s
}

// start starts a new speaker for n, with n's configuration.
func (n *node) start() {
	t := n.t
	cfg := n.cfg
	if cfg.ListenPort != -1 {
		cfg.ListenPort = int32(n.port)
	}
	n.logs = newLogRecorder(t, n.name)
	sp, err := New(cfg, Options{Logger: slog.New(n.logs)})
	if err != nil {
		t.Fatalf("%s: New: %v", n.name, err)
	}
	if err := sp.Start(t.Context()); err != nil {
		t.Fatalf("%s: Start: %v", n.name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sp.Stop(ctx, false); err != nil {
			t.Errorf("%s: Stop: %v", n.name, err)
		}
	})
	n.sp, n.view = sp, newView()
	sp.Watch(t.Context(), n.view.apply)
}

// peer is n as a peer of another node: a mesh peer unless mod says otherwise.
func (n *node) peer(mod func(*bgp.Peer)) bgp.Peer {
	p := bgp.Peer{Name: n.name, Address: n.addr, Port: uint16(n.port), ASN: n.asn, Mesh: true}
	if mod != nil {
		mod(&p)
	}
	return p
}

func (n *node) setPeers(peers ...bgp.Peer) {
	n.t.Helper()
	n.lab.peered.Store(true)
	if err := n.sp.SetPeers(n.t.Context(), peers); err != nil {
		n.t.Fatalf("%s: SetPeers: %v", n.name, err)
	}
}

// advertise sets n's adverts, given as "prefix via next-hop".
func (n *node) advertise(adverts ...string) {
	n.t.Helper()
	var list []bgp.Advert
	for _, a := range adverts {
		prefix, nh, _ := strings.Cut(a, " via ")
		list = append(list, bgp.Advert{Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(nh)})
	}
	if err := n.sp.SetAdvertised(n.t.Context(), list); err != nil {
		n.t.Fatalf("%s: SetAdvertised: %v", n.name, err)
	}
}

// waitRoute waits until n's learned route for prefix has exactly nextHops;
// none means until n has no route for it.
func (n *node) waitRoute(prefix string, nextHops ...string) {
	n.t.Helper()
	p := netip.MustParsePrefix(prefix)
	var want []netip.Addr
	for _, nh := range nextHops {
		want = append(want, netip.MustParseAddr(nh))
	}
	waitFor(n.t, fmt.Sprintf("%s: route %s via %v", n.name, prefix, nextHops), func() string {
		if got := n.view.get(p); !slices.Equal(got, want) {
			return fmt.Sprintf("via %v", got)
		}
		return ""
	})
}

// status waits until n's status of peer satisfies ok, and returns it.
func (n *node) status(peer string, ok func(bgp.PeerStatus) bool) bgp.PeerStatus {
	n.t.Helper()
	var last bgp.PeerStatus
	waitFor(n.t, fmt.Sprintf("%s: status of %s", n.name, peer), func() string {
		all, err := n.sp.Status(n.t.Context())
		if err != nil {
			return err.Error()
		}
		for _, st := range all {
			if st.Name == peer {
				last = st
				if ok(st) {
					return ""
				}
				return fmt.Sprintf("%+v", st)
			}
		}
		return fmt.Sprintf("no such peer in %+v", all)
	})
	return last
}

func established(st bgp.PeerStatus) bool { return st.State == bgp.StateEstablished }

// quiesce waits until n's monitor has handled every event it got.
func (n *node) quiesce() {
	n.t.Helper()
	waitFor(n.t, n.name+": monitor idle", func() string {
		if !n.sp.mon.idle() {
			return "busy"
		}
		return ""
	})
}

// waitConverged waits for n's Converged.
func (n *node) waitConverged() {
	n.t.Helper()
	select {
	case <-n.sp.Converged():
	case <-time.After(deadline):
		n.t.Fatalf("%s: not converged within %v", n.name, deadline)
	}
}

// waitFor polls check until it returns "" or the deadline passes; check
// returns what is still wrong.
func waitFor(t *testing.T, what string, check func() string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		wrong := check()
		if wrong == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("waiting for %s: still %s after %v", what, wrong, deadline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// view is what a node learned through Watch.
type view struct {
	mu     sync.Mutex
	routes map[netip.Prefix][]netip.Addr
	seen   map[netip.Prefix]bool // every prefix ever learned
}

func newView() *view {
	return &view{routes: map[netip.Prefix][]netip.Addr{}, seen: map[netip.Prefix]bool{}}
}

func (v *view) apply(routes []bgp.Route) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range routes {
		if len(r.NextHops) == 0 {
			delete(v.routes, r.Prefix)
			continue
		}
		v.routes[r.Prefix] = r.NextHops
		v.seen[r.Prefix] = true
	}
}

func (v *view) get(p netip.Prefix) []netip.Addr {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.routes[p]
}

func (v *view) everSeen(p string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seen[netip.MustParsePrefix(p)]
}

// logRecorder is a slog.Handler that keeps every record's message and
// attributes, and passes warnings and errors to the test log while the test
// runs (GoBGP's goroutines may log after it ended).
type logRecorder struct {
	t     *testing.T
	name  string
	attrs []slog.Attr
	state *logState
}

type logState struct {
	mu    sync.Mutex
	done  bool
	lines []string
}

func newLogRecorder(t *testing.T, name string) *logRecorder {
	r := &logRecorder{t: t, name: name, state: &logState{}}
	t.Cleanup(func() {
		r.state.mu.Lock()
		defer r.state.mu.Unlock()
		r.state.done = true
		if t.Failed() && testing.Verbose() {
			t.Logf("%s: full log:\n%s", name, strings.Join(r.state.lines, "\n"))
		}
	})
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	for _, a := range r.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.state.mu.Lock()
	defer r.state.mu.Unlock()
	r.state.lines = append(r.state.lines, b.String())
	if !r.state.done && rec.Level >= slog.LevelWarn {
		r.t.Logf("%s: %s", r.name, b.String())
	}
	return nil
}

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(slices.Clone(r.attrs), attrs...)
	return &c
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// count returns how many log lines contain every one of parts.
func (r *logRecorder) count(parts ...string) int {
	r.state.mu.Lock()
	defer r.state.mu.Unlock()
	n := 0
	for _, l := range r.state.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}
