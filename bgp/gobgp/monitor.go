package gobgp

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/internal/feed"
)

// monitor turns GoBGP's watch events into learned routes, rejection counts
// and the convergence signal.
//
// GoBGP's events are hints only: with multipath, a best-path event carries
// the paths that joined or left a prefix's multipath set, not the set. So
// the event callbacks (on GoBGP's watch goroutine, in GoBGP's order) only
// note which prefixes changed, which peer's announcements to re-check and
// whether convergence may have changed, and wake run. run, the one writer of
// what it derives, asks GoBGP for the current state of what was noted and
// publishes that: correct whatever the events said, and batched under churn.
type monitor struct {
	server    *server.BgpServer
	log       *slog.Logger
	routes    *feed.Feed
	rejects   *rejections
	wake      chan struct{}
	converged chan struct{}
	exited    chan struct{} // closed when run returns
	busy      atomic.Bool   // run is working

	// pathsMu is held around every ListPath and every soft reset in: GoBGP's
	// ListPath converts the paths it found after releasing its own lock, and
	// a soft reset in re-imports the very same Path objects, writing to them.
	pathsMu sync.Mutex

	mu       sync.Mutex
	dirty    map[netip.Prefix]struct{}                // best paths changed
	check    map[netip.Addr]map[netip.Prefix]struct{} // peer's announcement passed import policy again
	evaluate bool                                     // convergence may have changed
	expect   map[netip.Addr]bool                      // peers Converged waits for; nil before the first SetPeers

	done bool // converged; run's own

	// onPrefixLimit is called, on its own goroutine, with a peer GoBGP
	// shut down for exceeding its prefix limit.
	onPrefixLimit func(netip.Addr)
}

func newMonitor(s *server.BgpServer, log *slog.Logger, routes *feed.Feed) *monitor {
	return &monitor{
		server:    s,
		log:       log,
		routes:    routes,
		rejects:   newRejections(log),
		wake:      make(chan struct{}, 1),
		converged: make(chan struct{}),
		exited:    make(chan struct{}),
		dirty:     map[netip.Prefix]struct{}{},
		check:     map[netip.Addr]map[netip.Prefix]struct{}{},
	}
}

// watch subscribes to GoBGP's events, all on one watcher so that they come
// in the order GoBGP raised them, and runs until ctx is done or, with
// timeout, converges then at the latest.
func (m *monitor) watch(ctx context.Context, timeout time.Duration) error {
	err := m.server.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnBestPath:   m.onBestPath,
		OnPathUpdate: m.onPostPolicy,
		OnPathEor:    func(*apiutil.Path, time.Time) { m.note(func() { m.evaluate = true }) },
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Peer.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT && m.onPrefixLimit != nil {
				go m.onPrefixLimit(ev.Peer.State.NeighborAddress)
			}
			m.note(func() { m.evaluate = true })
		},
	}, server.WatchBestPath(false), server.WatchPostUpdate(false, "", ""), server.WatchEor(false), server.WatchPeer())
	if err != nil {
		return err
	}
	go m.run(ctx, timeout)
	return nil
}

// note changes the pending state under the lock and wakes run.
func (m *monitor) note(f func()) {
	m.mu.Lock()
	f()
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *monitor) onBestPath(paths []*apiutil.Path, _ time.Time) {
	m.note(func() {
		for _, p := range paths {
			if prefix, ok := prefixOf(p); ok {
				m.dirty[prefix] = struct{}{}
			}
		}
	})
}

// onPostPolicy gets every path a peer sent, after import policy: a rejected
// announcement comes as a withdrawal. Which it was is read from GoBGP's
// tables in run, not guessed from the event.
func (m *monitor) onPostPolicy(paths []*apiutil.Path, _ time.Time) {
	m.note(func() {
		for _, p := range paths {
			prefix, ok := prefixOf(p)
			if !ok || !p.PeerAddress.IsValid() {
				continue
			}
			if m.check[p.PeerAddress] == nil {
				m.check[p.PeerAddress] = map[netip.Prefix]struct{}{}
			}
			m.check[p.PeerAddress][prefix] = struct{}{}
		}
	})
}

// setPeers records the configured peers: their names for logs, and, the
// first time, the peers Converged waits for. Peers no longer configured are
// waited for no more and forgotten.
func (m *monitor) setPeers(names map[netip.Addr]string) {
	m.rejects.setPeers(names)
	m.note(func() {
		if m.expect == nil {
			m.expect = map[netip.Addr]bool{}
			for a := range names {
				m.expect[a] = true
			}
		}
		for a := range m.expect {
			if _, ok := names[a]; !ok {
				delete(m.expect, a)
			}
		}
		m.evaluate = true
	})
}

// run works through what the callbacks noted until ctx is done.
func (m *monitor) run(ctx context.Context, timeout time.Duration) {
	defer close(m.exited)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		timedOut := false
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
			timedOut = true
		}
		m.busy.Store(true)
		m.mu.Lock()
		dirty, check, evaluate := m.dirty, m.check, m.evaluate
		m.dirty, m.check, m.evaluate = map[netip.Prefix]struct{}{}, map[netip.Addr]map[netip.Prefix]struct{}{}, false
		m.mu.Unlock()

		m.flush(ctx, dirty, check)
		switch {
		case m.done:
		case timedOut:
			m.log.Warn("bgp converge timeout: peers still missing End-of-RIB", "timeout", timeout)
			m.converge()
		case evaluate && m.synced(ctx):
			m.log.Info("bgp converged: every peer sent End-of-RIB")
			m.converge()
		}
		m.busy.Store(false)
	}
}

// idle reports whether run has handled every event the callbacks got.
func (m *monitor) idle() bool {
	m.mu.Lock()
	pending := len(m.dirty) > 0 || len(m.check) > 0 || m.evaluate
	m.mu.Unlock()
	return !pending && !m.busy.Load() && len(m.wake) == 0
}

// converge closes converged once the watchers have every route published so
// far.
func (m *monitor) converge() {
	m.done = true
	m.routes.Barrier(func() { close(m.converged) })
}

// flush publishes the current best paths of the dirty prefixes and
// re-checks the noted announcements.
func (m *monitor) flush(ctx context.Context, dirty map[netip.Prefix]struct{}, check map[netip.Addr]map[netip.Prefix]struct{}) {
	if len(dirty) == 0 && len(check) == 0 {
		return
	}
	lookup := map[netip.Prefix]struct{}{}
	for p := range dirty {
		lookup[p] = struct{}{}
	}
	for _, ps := range check {
		for p := range ps {
			lookup[p] = struct{}{}
		}
	}
	rib, err := m.list(ctx, api.TableType_TABLE_TYPE_GLOBAL, "", lookup)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("read bgp rib", "err", err)
		}
		return
	}
	changes := make([]bgp.Route, 0, len(dirty))
	for p := range dirty {
		changes = append(changes, bestRoute(p, rib[p]))
	}
	m.routes.Publish(changes)

	for peer, ps := range check {
		adjIn, err := m.list(ctx, api.TableType_TABLE_TYPE_ADJ_IN, peer.String(), ps)
		if err != nil {
			adjIn = nil // the peer is gone, and its routes with it
		}
		for p := range ps {
			m.rejects.set(peer, p, announced(adjIn[p]), accepted(rib[p], peer))
		}
	}
}

// list returns the paths GoBGP's table holds for each of prefixes.
func (m *monitor) list(ctx context.Context, table api.TableType, peer string, prefixes map[netip.Prefix]struct{}) (map[netip.Prefix][]*apiutil.Path, error) {
	m.pathsMu.Lock()
	defer m.pathsMu.Unlock()
	out := map[netip.Prefix][]*apiutil.Path{}
	for family, ps := range byFamily(prefixes) {
		err := m.server.ListPath(apiutil.ListPathRequest{TableType: table, Name: peer, Family: family, Prefixes: lookups(ps)},
			func(nlri bgppkt.NLRI, paths []*apiutil.Path) {
				if n, ok := nlri.(*bgppkt.IPAddrPrefix); ok {
					out[n.Prefix] = paths
				}
			})
		if err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// bestRoute is the learned route for prefix: the next hops of its best paths.
// A prefix we originate ourselves is not learned, whatever peers say.
func bestRoute(prefix netip.Prefix, paths []*apiutil.Path) bgp.Route {
	r := bgp.Route{Prefix: prefix}
	for _, p := range paths {
		if !p.Best || p.Withdrawal || p.IsNexthopInvalid {
			continue
		}
		if !p.PeerAddress.IsValid() {
			return bgp.Route{Prefix: prefix}
		}
		if nh := nextHopOf(p); nh.IsValid() && !nh.IsUnspecified() && !slices.Contains(r.NextHops, nh) {
			r.NextHops = append(r.NextHops, nh)
		}
	}
	slices.SortFunc(r.NextHops, netip.Addr.Compare)
	return r
}

// announced returns the path a peer announces in its Adj-RIB-In, if any.
func announced(adjIn []*apiutil.Path) *apiutil.Path {
	for _, p := range adjIn {
		if !p.Withdrawal {
			return p
		}
	}
	return nil
}

// accepted reports whether the Loc-RIB holds a path from peer.
func accepted(rib []*apiutil.Path, peer netip.Addr) bool {
	return slices.ContainsFunc(rib, func(p *apiutil.Path) bool { return p.PeerAddress == peer && !p.Withdrawal })
}

// synced reports whether every expected peer is established and has sent
// End-of-RIB for every family it negotiated graceful restart for (a peer
// sends End-of-RIB only then).
func (m *monitor) synced(ctx context.Context) bool {
	m.mu.Lock()
	expect := make(map[netip.Addr]bool, len(m.expect))
	for a := range m.expect {
		expect[a] = true
	}
	waiting := m.expect == nil
	m.mu.Unlock()
	if waiting {
		return false // SetPeers has not been called yet
	}
	pending := 0
	err := m.server.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil && expect[a] && !peerSynced(p) {
			pending++
		}
	})
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("list bgp peers", "err", err)
		}
		return false
	}
	return pending == 0
}

func peerSynced(p *api.Peer) bool {
	if p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
		return false
	}
	for _, af := range p.GetAfiSafis() {
		if s := af.GetMpGracefulRestart().GetState(); s.GetReceived() && !s.GetEndOfRibReceived() {
			return false
		}
	}
	return true
}
