package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/ipam"
)

// routeTable is what routing needs of the dataplane: learned routes,
// blackholes over this node's blocks, and the word that BGP has converged.
type routeTable interface {
	Upsert(prefix netip.Prefix, nextHops []netip.Addr) error
	Delete(prefix netip.Prefix)
	SetBlackholes(prefixes []netip.Prefix) error
	MarkConverged()
}

// blockLister is what routing needs of IPAM.
type blockLister interface {
	Blocks(ctx context.Context) ([]ipam.Block, error)
}

// routing keeps BGP and the kernel in step with IPAM and the mesh. Data flows
// one way: IPAM blocks → adverts and blackholes; registry (and the
// datastore's explicit peers) → peers; speaker → kernel routes.
type routing struct {
	self     mesh.Node
	speaker  bgp.Speaker
	table    routeTable
	blocks   blockLister
	registry mesh.Registry // nil: no node-to-node mesh
	peers    *peerSet      // the mesh's and the explicit ones (ToRs, route reflectors)
	changed  <-chan struct{}
	resync   time.Duration // how often adverts are recomputed without a change
	settle   time.Duration // how long after BGP converged stale routes are kept
	log      *slog.Logger
	adverts  *advertLog // what was last announced, for status
}

// settleTime is how long stale kernel routes outlive BGP's convergence.
const settleTime = 5 * time.Second

// run works until ctx is done. Failures are logged and retried on the next
// change or resync; nothing here is fatal once the speaker has started.
func (r *routing) run(ctx context.Context) {
	go r.speaker.Watch(ctx, r.learned)
	go func() {
		select {
		case <-r.speaker.Converged():
		case <-ctx.Done():
			return
		}
		// End-of-RIB is not the last word: a helper that saw us restart
		// (FRR) sends its End-of-RIB first and its routes after ours, about a
		// second later. Stale routes wait a little longer than that.
		r.log.Info("bgp converged: stale routes of an earlier run go after a settle time", "settle", r.settle)
		select {
		case <-time.After(r.settle):
			r.table.MarkConverged()
		case <-ctx.Done():
		}
	}()
	if r.registry != nil {
		go r.registry.Watch(ctx, func(nodes []mesh.Node) { r.peers.setNodes(ctx, nodes) })
	} else {
		r.peers.setNodes(ctx, nil)
	}
	r.advertiseLoop(ctx)
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

func (r *routing) advertiseLoop(ctx context.Context) {
	t := time.NewTicker(r.resync)
	defer t.Stop()
	for {
		r.advertise(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.changed:
		case <-t.C:
		}
	}
}

// advertise announces what IPAM says this node holds and blackholes its blocks.
func (r *routing) advertise(ctx context.Context) {
	blocks, err := r.blocks.Blocks(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("list blocks for bgp", "err", err)
		}
		return
	}
	adverts, local := advertsOf(r.self, blocks)
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

// notifyingStore tells routing after every successful write to the store:
// this node's blocks or borrowed addresses may have changed.
type notifyingStore struct {
	ipam.Store
	changed chan struct{}
}

func newNotifyingStore(s ipam.Store) *notifyingStore {
	return &notifyingStore{Store: s, changed: make(chan struct{}, 1)}
}

func (s *notifyingStore) notify() {
	select {
	case s.changed <- struct{}{}:
	default: // one pending notice covers any number of writes
	}
}

func (s *notifyingStore) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	b, err := s.Store.CreateBlock(ctx, b)
	if err == nil {
		s.notify()
	}
	return b, err
}

func (s *notifyingStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	b, err := s.Store.UpdateBlock(ctx, b)
	if err == nil {
		s.notify()
	}
	return b, err
}

func (s *notifyingStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	err := s.Store.DeleteBlock(ctx, b)
	if err == nil {
		s.notify()
	}
	return err
}
