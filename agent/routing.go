package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/gobgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/dataplane"
	"github.com/flatnet-io/flatnet/internal/atomicfile"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/metrics"
)

// The routing stack — BGP speaker, route reconciler, mesh registry and
// explicit peers — lives here, whole: startRouting builds and starts it,
// stop ends it, and every goroutine it starts is waited for by stop. Data
// flows one way:
//
//   - IPAM → adverts and blackholes: the allocator tells ownBlocks what it
//     wrote (ipam.Config.Changed), and what every block is on a periodic
//     resync; advertiseLoop announces the result (SetAdvertised is
//     declarative: the speaker works out the difference).
//   - registry and BGPPeer objects → peers (peerSet).
//   - speaker → kernel: learned routes, less next hops that are this node.

// routeTable is what routing needs of the dataplane: learned routes,
// blackholes over this node's blocks, and the word that BGP has converged.
type routeTable interface {
	Upsert(prefix netip.Prefix, nextHops []netip.Addr) error
	Delete(prefix netip.Prefix)
	SetBlackholes(prefixes []netip.Prefix) error
	MarkConverged()
}

// resyncer is what routing needs of IPAM: every block, told to ownBlocks
// again (ipam.Allocator.Resync).
type resyncer interface {
	Resync(ctx context.Context) error
}

// Timings of routing.
const (
	// resyncInterval is how often every block is read again, whatever the
	// allocator said: the safety net for writes it did not make.
	resyncInterval = 30 * time.Second
	// settleTime is how long stale kernel routes outlive BGP's convergence.
	settleTime = 5 * time.Second
)

// routing keeps BGP and the kernel in step with IPAM and the mesh.
type routing struct {
	self     mesh.Node
	routerID netip.Addr
	speaker  bgp.Speaker
	table    routeTable
	blocks   *ownBlocks
	ipam     resyncer
	peers    *peerSet
	// watch start the watchers that report peers to peers: the registry's
	// and the BGPPeer objects'. Each returns when ctx is done.
	watch   []func(ctx context.Context)
	resync  time.Duration
	settle  time.Duration
	adverts *advertLog // what was last announced, for status
	counts  func() dataplane.Counts
	log     *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// stopped ends what routing does not own but must end last: the
	// speaker and the reconciler (nil in tests). planned says whether the
	// stop is a planned restart.
	stopped func(planned bool)
}

// startRouting builds and starts the node's routing. blocks is what the
// allocator alloc tells its writes to; ds has the mesh's registry and
// the explicit peers besides the config file's. Kernel routes go into netns;
// nil is the agent's own namespace.
func startRouting(ctx context.Context, cfg config.Config, ds *datastore, alloc *ipam.Allocator, blocks *ownBlocks, adverts *advertLog, netns ns.NetNS, m *metrics.Metrics, log *slog.Logger) (*routing, error) {
	self, err := nodeIdentity(cfg)
	if err != nil {
		return nil, err
	}
	marker := filepath.Join(filepath.Dir(cfg.API.Socket), "bgp-planned-restart")
	bcfg := speakerConfig(cfg, self, alloc.Pools())
	if restartedAt, err := readMarker(marker); err == nil && time.Since(restartedAt) < bcfg.GracefulRestart.RestartTime {
		bcfg.GracefulRestart.Restarting = bcfg.GracefulRestart.Enabled
		log.Info("planned restart: peers hold our routes; ours are sent after theirs", "stopped", time.Since(restartedAt).Round(time.Millisecond))
	}
	_ = os.Remove(marker)

	peers := make([]bgp.Peer, 0, len(cfg.BGP.Peers))
	for _, p := range cfg.BGP.Peers {
		peers = append(peers, p.BGP())
	}
	if err := bgp.ValidatePeers(bcfg, peers); err != nil {
		return nil, fmt.Errorf("bgp.peers: %w", err)
	}
	speaker, err := gobgp.New(bcfg, gobgp.Options{Logger: log.With("component", "bgp")})
	if err != nil {
		return nil, err
	}
	table, err := dataplane.New(dataplane.Options{NetNS: netns, Log: log.With("component", "dataplane"), OnPass: m.DataplanePass})
	if err != nil {
		return nil, err
	}
	if cfg.BGP.Mesh {
		if err := ds.registry.Register(ctx, self); err != nil {
			table.Close()
			return nil, err
		}
	}
	if err := speaker.Start(ctx); err != nil {
		table.Close()
		return nil, err
	}

	rlog := log.With("component", "routing")
	r := &routing{
		self: self, routerID: bcfg.RouterID, speaker: speaker, table: table, blocks: blocks, ipam: alloc,
		peers:  newPeerSet(speaker, self, cfg.BGP.MeshTemplate(), peers, ds.peers == nil, rlog),
		resync: resyncInterval, settle: settleTime, adverts: adverts, counts: table.Counts, log: rlog,
	}
	if cfg.BGP.Mesh {
		r.watch = append(r.watch, func(ctx context.Context) { ds.registry.Watch(ctx, func(n []mesh.Node) { r.peers.setNodes(ctx, n) }) })
	} else {
		r.peers.setNodes(ctx, nil)
	}
	if ds.peers != nil {
		r.watch = append(r.watch, func(ctx context.Context) {
			ds.peers.Watch(ctx, bcfg, peers, func(p []bgp.Peer) { r.peers.setExplicit(ctx, p) })
		})
	}
	runCtx, cancelRun := context.WithCancel(ctx)
	tableDone := make(chan struct{})
	go func() {
		defer close(tableDone)
		if err := table.Run(runCtx); err != nil && runCtx.Err() == nil {
			log.Error("route reconciler stopped", "err", err)
		}
	}()
	r.stopped = func(planned bool) {
		// A planned restart: recorded for the next start, and no
		// NOTIFICATION, so peers that negotiated graceful restart keep our
		// routes. Otherwise a Cease: peers withdraw them at once. The
		// kernel keeps its routes either way.
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if planned {
			if err := atomicfile.Write(marker, []byte(time.Now().UTC().Format(time.RFC3339Nano)), false); err != nil {
				log.Warn("cannot record the planned restart; the next start will not ask peers to keep routes", "err", err)
			}
		}
		if err := speaker.Stop(stopCtx, planned); err != nil {
			log.Warn("stop bgp", "err", err)
		}
		log.Info("bgp stopped", "plannedRestart", planned)
		cancelRun()
		<-tableDone
		table.Close() // routes stay in the kernel
	}
	r.start(runCtx)
	log.Info("bgp started", "asn", self.ASN, "ipv4", self.IPv4, "ipv6", self.IPv6, "mesh", cfg.BGP.Mesh, "peers", len(peers))
	return r, nil
}

// start starts routing's goroutines; stop waits for them.
func (r *routing) start(ctx context.Context) {
	ctx, r.cancel = context.WithCancel(ctx)
	r.speaker.Watch(ctx, r.learned)
	r.wg.Go(func() { r.markConverged(ctx) })
	for _, w := range r.watch {
		r.wg.Go(func() { w(ctx) })
	}
	r.wg.Go(func() { r.advertiseLoop(ctx) })
}

// stop ends routing: its goroutines first, then the speaker (gracefully
// when planned, a planned restart) and the reconciler, whose routes stay in
// the kernel.
func (r *routing) stop(planned bool) {
	r.cancel()
	r.wg.Wait()
	if r.stopped != nil {
		r.stopped(planned)
	}
}

func readMarker(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
}

// markConverged lets the dataplane drop stale routes once BGP has converged
// and a settle time has passed. End-of-RIB is not the last word: a helper
// that saw us restart (FRR) sends its End-of-RIB first and its routes after
// ours, about a second later.
func (r *routing) markConverged(ctx context.Context) {
	select {
	case <-r.speaker.Converged():
	case <-ctx.Done():
		return
	}
	r.log.Info("bgp converged: stale routes of an earlier run go after a settle time", "settle", r.settle)
	select {
	case <-time.After(r.settle):
		r.table.MarkConverged()
	case <-ctx.Done():
	}
}

// learned hands the speaker's route changes to the kernel, minus next hops
// that are this node itself.
func (r *routing) learned(routes []bgp.Route) {
	for _, rt := range routes {
		hops := slices.DeleteFunc(slices.Clone(rt.NextHops), func(a netip.Addr) bool { return a == r.self.IPv4 || a == r.self.IPv6 })
		if len(hops) == 0 {
			r.table.Delete(rt.Prefix)
			continue
		}
		if err := r.table.Upsert(rt.Prefix, hops); err != nil {
			r.log.Warn("learned route not installable", "prefix", rt.Prefix, "err", err)
		}
	}
}

// advertiseLoop announces what the allocator said, after each of its writes
// and after each resync, until ctx is done.
func (r *routing) advertiseLoop(ctx context.Context) {
	t := time.NewTicker(r.resync)
	defer t.Stop()
	resync := true
	for {
		if resync {
			if err := r.ipam.Resync(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("read blocks for bgp", "err", err)
			}
		}
		r.advertise(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.blocks.changed:
			resync = false
		case <-t.C:
			resync = true
		}
	}
}

// advertise announces the blocks and borrowed addresses ownBlocks holds and
// blackholes this node's blocks.
func (r *routing) advertise(ctx context.Context) {
	adverts, local := advertsOf(r.self, r.blocks.list())
	if err := r.table.SetBlackholes(local); err != nil {
		r.log.Error("set blackholes", "err", err)
	}
	if err := r.speaker.SetAdvertised(ctx, adverts); err != nil {
		if ctx.Err() == nil {
			r.log.Error("set bgp adverts", "err", err)
		}
		return
	}
	if r.adverts != nil {
		r.adverts.set(adverts)
	}
}

// advertsOf returns what self announces: every block with its affinity as
// the block's prefix, and every address it borrowed from another node's
// block as a host prefix, each with self's address of the family as next
// hop. A family self has no address of is not announced. local are self's
// blocks, for blackholes.
func advertsOf(self mesh.Node, blocks []ipam.Block) (adverts []bgp.Advert, local []netip.Prefix) {
	nextHop := func(a netip.Addr) (netip.Addr, bool) {
		if a.Is4() {
			return self.IPv4, self.IPv4.IsValid()
		}
		return self.IPv6, self.IPv6.IsValid()
	}
	for _, b := range blocks {
		if b.Affinity == self.Name {
			local = append(local, b.CIDR)
			if nh, ok := nextHop(b.CIDR.Addr()); ok {
				adverts = append(adverts, bgp.Advert{Prefix: b.CIDR, NextHop: nh})
			}
			continue
		}
		for _, al := range b.Allocations {
			if al.Attrs.Node != self.Name {
				continue
			}
			if nh, ok := nextHop(al.Addr); ok {
				adverts = append(adverts, bgp.Advert{Prefix: netip.PrefixFrom(al.Addr, al.Addr.BitLen()), NextHop: nh})
			}
		}
	}
	return adverts, local
}

// ownBlocks is what this node announces from, kept up to date by the
// allocator's changes (its apply is ipam.Config.Changed): the node's own
// blocks and the blocks it borrowed addresses from. changed wakes routing
// after each change; the data is here.
type ownBlocks struct {
	node    string
	changed chan struct{}

	mu     sync.Mutex
	blocks map[netip.Prefix]ipam.Block
}

func newOwnBlocks(node string) *ownBlocks {
	return &ownBlocks{node: node, changed: make(chan struct{}, 1), blocks: map[netip.Prefix]ipam.Block{}}
}

// apply takes in what the allocator wrote or listed. It never blocks.
func (o *ownBlocks) apply(c ipam.Change) {
	o.mu.Lock()
	if c.Full {
		clear(o.blocks)
	}
	for _, p := range c.Deleted {
		delete(o.blocks, p)
	}
	for _, b := range c.Blocks {
		if o.concerns(b) {
			o.blocks[b.CIDR] = b
		} else {
			delete(o.blocks, b.CIDR)
		}
	}
	o.mu.Unlock()
	select {
	case o.changed <- struct{}{}:
	default: // one pending wake-up covers any number of changes
	}
}

// concerns tells whether b is this node's or holds an address it borrowed.
func (o *ownBlocks) concerns(b ipam.Block) bool {
	return b.Affinity == o.node || slices.ContainsFunc(b.Allocations, func(a ipam.Allocation) bool { return a.Attrs.Node == o.node })
}

// list returns the blocks, sorted by address.
func (o *ownBlocks) list() []ipam.Block {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.SortedFunc(maps.Values(o.blocks), func(a, b ipam.Block) int { return a.CIDR.Compare(b.CIDR) })
}
