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
// GoBGP's best-path events are hints only: with multipath, a best-path event
// carries the paths that joined or left a prefix's multipath set, not the
// set. So the event callbacks (on GoBGP's watch goroutine, in GoBGP's order)
// only note which prefixes changed and whether convergence may have changed,
// and wake run. run, the one writer of what it derives, asks GoBGP for the
// current state of what was noted and publishes that: correct whatever the
// events said, and batched under churn.
//
// Rejections are counted as routes are imported: GoBGP's pre-policy update
// events carry every route a peer announces or withdraws, and rejections
// classifies each with the rules the import policy was built from. Only
// when the policy changes (a new block, a peer added or removed) does run
// re-read the peers' Adj-RIB-Ins to classify them again, and after a
// restarting peer's End-of-RIB (GoBGP drops its stale routes without an
// event).
type monitor struct {
	server    *server.BgpServer
	log       *slog.Logger
	routes    *feed.Feed
	rejects   *rejections
	flaps     *flaps
	wake      chan struct{}
	converged chan struct{}
	exited    chan struct{} // closed when run returns
	busy      atomic.Bool   // run is working

	// pathsMu is held around every ListPath and every soft reset in: GoBGP's
	// ListPath converts the paths it found after releasing its own lock, and
	// a soft reset in re-imports the very same Path objects, writing to them.
	pathsMu sync.Mutex

	mu            sync.Mutex
	dirty         map[netip.Prefix]struct{} // best paths changed
	reclassify    map[netip.Addr]struct{}   // peers whose Adj-RIB-In to classify again
	reclassifyAll bool                      // every peer's
	evaluate      bool                      // convergence may have changed
	expect        map[netip.Addr]bool       // peers Converged waits for; nil before the first SetPeers

	done bool // converged; run's own

	// onPrefixLimit is called, on its own goroutine, with a peer GoBGP
	// shut down for exceeding its prefix limit.
	onPrefixLimit func(netip.Addr)
}

func newMonitor(s *server.BgpServer, log *slog.Logger, routes *feed.Feed) *monitor {
	return &monitor{
		server:     s,
		log:        log,
		routes:     routes,
		rejects:    newRejections(log),
		flaps:      newFlaps(),
		wake:       make(chan struct{}, 1),
		converged:  make(chan struct{}),
		exited:     make(chan struct{}),
		dirty:      map[netip.Prefix]struct{}{},
		reclassify: map[netip.Addr]struct{}{},
	}
}

// watch subscribes to GoBGP's events, all on one watcher so that they come
// in the order GoBGP raised them, and runs until ctx is done or, with
// timeout, converges then at the latest.
func (m *monitor) watch(ctx context.Context, timeout time.Duration) error {
	err := m.server.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnBestPath: m.onBestPath,
		// Pre-policy: what peers announce and withdraw, and the
		// withdrawals of what GoBGP drops itself (a peer down).
		OnPathUpdate: func(paths []*apiutil.Path, _ time.Time) { m.rejects.update(paths) },
		OnPathEor: func(eor *apiutil.Path, _ time.Time) {
			m.note(func() {
				m.evaluate = true
				// A restarting peer's stale routes went without an event.
				if a := eor.PeerAddress; a.IsValid() && m.rejects.count(a) > 0 {
					m.reclassify[a] = struct{}{}
				}
			})
		},
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			m.flaps.event(ev)
			if ev.Peer.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT && m.onPrefixLimit != nil {
				go m.onPrefixLimit(ev.Peer.State.NeighborAddress)
			}
			m.note(func() { m.evaluate = true })
		},
	}, server.WatchBestPath(false), server.WatchEor(false), server.WatchPeer(),
		server.WatchUpdate(false, "", ""), server.WatchAdjInWithdraw())
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

// onBestPath notes the prefixes whose best paths changed.
func (m *monitor) onBestPath(paths []*apiutil.Path, _ time.Time) {
	m.note(func() {
		for _, p := range paths {
			if prefix, ok := prefixOf(p); ok {
				m.dirty[prefix] = struct{}{}
			}
		}
	})
}

// policyChanged has the rejections of every peer classified by c from now
// on, and run classify every peer's Adj-RIB-In again.
func (m *monitor) policyChanged(c *classifier) {
	m.rejects.setPolicy(c)
	m.note(func() { m.reclassifyAll = true })
}

// setPeers records the configured peers: their names for logs, and, the
// first time, the peers Converged waits for. Peers no longer configured are
// waited for no more and forgotten.
func (m *monitor) setPeers(names map[netip.Addr]string) {
	m.rejects.setPeers(names)
	m.flaps.setPeers(names)
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
		dirty, evaluate := m.dirty, m.evaluate
		reclassify, all := m.reclassify, m.reclassifyAll
		m.dirty, m.evaluate = map[netip.Prefix]struct{}{}, false
		m.reclassify, m.reclassifyAll = map[netip.Addr]struct{}{}, false
		m.mu.Unlock()

		m.flush(ctx, dirty)
		m.classify(ctx, reclassify, all)
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
	pending := len(m.dirty) > 0 || len(m.reclassify) > 0 || m.reclassifyAll || m.evaluate
	m.mu.Unlock()
	return !pending && !m.busy.Load() && len(m.wake) == 0
}

// converge closes converged once the watchers have every route published so
// far.
func (m *monitor) converge() {
	m.done = true
	m.routes.Barrier(func() { close(m.converged) })
}

// flushChunk is how many prefixes flush reads from GoBGP at a time: a burst
// of 100k new routes is read and published in pieces, so that the lookups,
// GoBGP's copies of the paths and the changes do not all live at once.
const flushChunk = 4096

// flush publishes the current best paths of the dirty prefixes.
func (m *monitor) flush(ctx context.Context, dirty map[netip.Prefix]struct{}) {
	chunk := make(map[netip.Prefix]struct{}, min(len(dirty), flushChunk))
	for p := range dirty {
		chunk[p] = struct{}{}
		if len(chunk) == flushChunk {
			if !m.flushChunk(ctx, chunk) {
				return
			}
			clear(chunk)
		}
	}
	m.flushChunk(ctx, chunk)
}

// flushChunk publishes the current best paths of prefixes, and reports
// whether it could read them.
func (m *monitor) flushChunk(ctx context.Context, prefixes map[netip.Prefix]struct{}) bool {
	if len(prefixes) == 0 {
		return true
	}
	rib, err := m.list(ctx, api.TableType_TABLE_TYPE_GLOBAL, "", prefixes)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("read bgp rib", "err", err)
		}
		return false
	}
	changes := make([]bgp.Route, 0, len(prefixes))
	for p := range prefixes {
		changes = append(changes, bestRoute(p, rib[p]))
	}
	m.routes.Publish(changes)
	return true
}

// classify classifies the Adj-RIB-In of the peers given (all: of every
// established peer) again with the current policy.
func (m *monitor) classify(ctx context.Context, peers map[netip.Addr]struct{}, all bool) {
	if len(peers) == 0 && !all {
		return
	}
	c := m.rejects.policy.Load()
	if c == nil {
		return
	}
	if all {
		peers = map[netip.Addr]struct{}{}
		err := m.server.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
				peers[a] = struct{}{}
			}
		})
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("list bgp peers", "err", err)
				m.note(func() { m.reclassifyAll = true }) // next time
			}
			return
		}
	}
	for peer := range peers {
		m.rejects.begin(peer)
		adjIn := map[netip.Prefix]*apiutil.Path{}
		err := m.walk(ctx, api.TableType_TABLE_TYPE_ADJ_IN, peer.String(), nil, func(prefix netip.Prefix, paths []*apiutil.Path) {
			if p := announced(paths); p != nil {
				adjIn[prefix] = p
			}
		})
		if err != nil && ctx.Err() != nil {
			return
		}
		// A peer that is gone or down has an empty Adj-RIB-In.
		m.rejects.end(peer, c, adjIn)
	}
}

// list returns the paths GoBGP's table holds for each of prefixes.
func (m *monitor) list(ctx context.Context, table api.TableType, peer string, prefixes map[netip.Prefix]struct{}) (map[netip.Prefix][]*apiutil.Path, error) {
	out := make(map[netip.Prefix][]*apiutil.Path, len(prefixes))
	err := m.walk(ctx, table, peer, prefixes, func(prefix netip.Prefix, paths []*apiutil.Path) { out[prefix] = paths })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// walk calls fn with the paths GoBGP's table holds for each of prefixes,
// nil: for every unicast prefix in it.
func (m *monitor) walk(ctx context.Context, table api.TableType, peer string, prefixes map[netip.Prefix]struct{}, fn func(netip.Prefix, []*apiutil.Path)) error {
	m.pathsMu.Lock()
	defer m.pathsMu.Unlock()
	reqs := map[bgppkt.Family][]*apiutil.LookupPrefix{}
	if prefixes == nil {
		for _, f := range families {
			reqs[f] = nil
		}
	}
	for family, ps := range byFamily(prefixes) {
		reqs[family] = lookups(ps)
	}
	for family, lookup := range reqs {
		err := m.server.ListPath(apiutil.ListPathRequest{TableType: table, Name: peer, Family: family, Prefixes: lookup},
			func(nlri bgppkt.NLRI, paths []*apiutil.Path) {
				if n, ok := nlri.(*bgppkt.IPAddrPrefix); ok {
					fn(n.Prefix, paths)
				}
			})
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
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
