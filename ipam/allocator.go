package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Config says whom an Allocator allocates for and from which pools.
type Config struct {
	Node  string
	Pools []Pool
	// StrictAffinity forbids borrowing from other nodes' blocks when no free block
	// is left: the request fails with ErrExhausted instead.
	StrictAffinity bool
	// ReleaseGrace is how long an empty block of this node stays claimed before
	// ReleaseIdleBlocks gives it back; 0 releases it as soon as it empties.
	ReleaseGrace time.Duration
	// Changed, if set, is told what every successful write of this
	// allocator changed, and what Resync lists, in that order: that is how
	// routing learns what to announce. It is called with the allocator's
	// lock held, so it must be quick and must not call the allocator.
	Changed func(Change)
	// Timed, if set, is told how long each Allocate, Release and GC took,
	// waiting for the allocator's lock included (OpAllocate, OpRelease,
	// OpGC), whatever the outcome. It must be quick.
	Timed  func(op string, took time.Duration)
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
}

// Allocator hands out addresses for one node. Its methods are safe to call
// concurrently; they run one at a time, because every operation of a node touches
// the same few blocks and would only conflict with itself.
type Allocator struct {
	store Store
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	// pending are handles whose release the store did not take: they are
	// released again by RetryReleases (pending.go).
	pending map[string]bool
	stats   stats
}

// Request asks for one address of each family for a handle.
type Request struct {
	Handle string
	Attrs  Attrs // Attrs.Node is always set to the allocator's node
	// Families to allocate; empty means one address of every family that has a pool.
	Families []Family
}

// maxAttempts bounds how often one operation retries after losing a race.
const maxAttempts = 64

// New returns an allocator for cfg.Node over store.
func New(store Store, cfg Config) (*Allocator, error) {
	if cfg.Node == "" {
		return nil, fmt.Errorf("new allocator: %w: empty node name", ErrInvalid)
	}
	if len(cfg.Pools) == 0 {
		return nil, fmt.Errorf("new allocator: %w: no pools", ErrInvalid)
	}
	if len(cfg.Pools) > MaxPools {
		return nil, fmt.Errorf("new allocator: %w: %d pools, at most %d allowed", ErrInvalid, len(cfg.Pools), MaxPools)
	}
	for i, p := range cfg.Pools {
		if _, err := NewPool(p.Name, p.CIDR, p.BlockSize); err != nil {
			return nil, fmt.Errorf("new allocator: %w", err)
		}
		for _, q := range cfg.Pools[:i] {
			if p.CIDR.Overlaps(q.CIDR) {
				return nil, fmt.Errorf("new allocator: %w: pool %s (%s) overlaps pool %s (%s)", ErrInvalid, p.Name, p.CIDR, q.Name, q.CIDR)
			}
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Pools = slices.Clone(cfg.Pools)
	if cfg.Changed != nil {
		store = reportingStore{Store: store, changed: cfg.Changed}
	}
	return &Allocator{store: store, cfg: cfg, log: log.With("node", cfg.Node)}, nil
}

// Node is the node this allocator works for.
func (a *Allocator) Node() string { return a.cfg.Node }

// StrictAffinity tells whether this node refuses to borrow from other nodes' blocks.
func (a *Allocator) StrictAffinity() bool { return a.cfg.StrictAffinity }

// Pools returns the configured pools.
func (a *Allocator) Pools() []Pool { return slices.Clone(a.cfg.Pools) }

// Allocate returns one address of each requested family for req.Handle. Asking
// again with the same handle, on the same node, returns the same addresses. When one family cannot
// be served, the addresses this call took are given back before it fails.
func (a *Allocator) Allocate(ctx context.Context, req Request) ([]Allocation, error) {
	defer a.timed(OpAllocate, time.Now())
	if err := validHandle(req.Handle); err != nil {
		return nil, err
	}
	if err := validAttrs(req.Attrs); err != nil {
		return nil, err
	}
	fams, err := a.families(req.Families)
	if err != nil {
		return nil, err
	}
	req.Attrs.Node = a.cfg.Node

	a.mu.Lock()
	defer a.mu.Unlock()
	// A handle asked for again is in use again: its addresses, if a
	// release of them is pending, are its own again.
	delete(a.pending, req.Handle)
	var got, taken []Allocation
	for _, f := range fams {
		al, isNew, err := a.allocate(ctx, req, f)
		if err != nil {
			if len(taken) > 0 {
				held := a.holds(req.Handle)
				_, rbErr := a.release(ctx, func(x Allocation) bool {
					return held(x) && slices.ContainsFunc(taken, func(t Allocation) bool { return t.Addr == x.Addr })
				})
				err = errors.Join(err, rbErr)
			}
			return nil, err
		}
		got = append(got, al)
		if isNew {
			taken = append(taken, al)
		}
	}
	return got, nil
}

// allocate finds or makes one allocation of family f; isNew is false when the
// handle already held one.
func (a *Allocator) allocate(ctx context.Context, req Request, f Family) (al Allocation, isNew bool, err error) {
	pools := a.poolsOf(f)
	for attempt := range maxAttempts {
		if err := a.pause(ctx, attempt); err != nil {
			return al, false, err
		}
		blocks, err := a.listBlocks(ctx, pools)
		if err != nil {
			return al, false, err
		}
		for _, b := range blocks {
			if i := slices.IndexFunc(b.Allocations, a.holds(req.Handle)); i >= 0 {
				return b.Allocations[i], false, nil
			}
		}
		al = Allocation{Handle: req.Handle, Attrs: req.Attrs, Allocated: a.cfg.Now().UTC()}

		// 1. A free address in a block of our own.
		if i := slices.IndexFunc(blocks, func(b Block) bool { return b.Affinity == a.cfg.Node && b.hasRoom() }); i >= 0 {
			if al, err = a.place(ctx, blocks[i], al); err == nil {
				return al, true, nil
			} else if LostRace(err) {
				a.stats.conflicts.Add(1)
				continue
			}
			return al, false, err
		}

		// 2. Claim a free block, with the allocation already in it: one write.
		claimed := make(map[netip.Prefix]bool, len(blocks))
		for _, b := range blocks {
			claimed[b.CIDR] = true
		}
		if cidr, ok := firstUnclaimed(pools, claimed); ok {
			al.Addr = cidr.Addr()
			_, err := a.store.CreateBlock(ctx, Block{CIDR: cidr, Affinity: a.cfg.Node, Allocations: []Allocation{al}})
			if errors.Is(err, ErrExists) {
				a.stats.conflicts.Add(1)
				continue
			}
			if err != nil {
				return al, false, fmt.Errorf("claim block %s: %w", cidr, err)
			}
			a.log.Info("claimed block", "block", cidr)
			return al, true, nil
		}

		// 3. Borrow from another node's block.
		if !a.cfg.StrictAffinity {
			if i := slices.IndexFunc(blocks, func(b Block) bool { return b.hasRoom() }); i >= 0 {
				if al, err = a.place(ctx, blocks[i], al); err == nil {
					a.log.Info("borrowed address", "addr", al.Addr, "block", blocks[i].CIDR, "owner", blocks[i].Affinity)
					return al, true, nil
				} else if LostRace(err) {
					a.stats.conflicts.Add(1)
					continue
				}
				return al, false, err
			}
		}
		why := "no free address in pools " + poolNames(pools)
		if a.cfg.StrictAffinity {
			why += " (strictAffinity: not borrowing from other nodes' blocks)"
		}
		return al, false, fmt.Errorf("allocate %s address for %s: %w: %s", f, req.Handle, ErrExhausted, why)
	}
	return al, false, fmt.Errorf("allocate %s address for %s: gave up after %d attempts: %w", f, req.Handle, maxAttempts, ErrConflict)
}

// place puts al at the lowest free address of b and writes b back.
func (a *Allocator) place(ctx context.Context, b Block, al Allocation) (Allocation, error) {
	addr, ok := b.firstFree()
	if !ok {
		return al, fmt.Errorf("block %s: %w", b.CIDR, ErrConflict)
	}
	al.Addr = addr
	b.insert(al)
	if _, err := a.store.UpdateBlock(ctx, b); err != nil {
		return al, fmt.Errorf("update block %s: %w", b.CIDR, err)
	}
	return al, nil
}

// Release gives back every address handle holds on this node and returns
// them. An unknown handle is not an error: there is simply nothing to release.
// A release the store does not take (a full disk) is recorded and retried
// by RetryReleases, and Release returns what it did release without an
// error; only the end of ctx is an error.
func (a *Allocator) Release(ctx context.Context, handle string) ([]Allocation, error) {
	defer a.timed(OpRelease, time.Now())
	if err := validHandle(handle); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	gone, err := a.release(ctx, a.holds(handle))
	if err != nil && ctx.Err() == nil {
		a.deferRelease(handle, err)
		return gone, nil
	}
	return gone, err
}

// holds matches the allocations of handle on this node. A handle is a
// node's: the same name on another node is another pod (or a client that
// must not reach it), so one node never returns or releases another's.
func (a *Allocator) holds(handle string) func(Allocation) bool {
	return func(x Allocation) bool { return x.Handle == handle && x.Attrs.Node == a.cfg.Node }
}

// GC releases every allocation made for this node whose handle is not in valid,
// and returns what it released.
func (a *Allocator) GC(ctx context.Context, valid []string) ([]Allocation, error) {
	defer a.timed(OpGC, time.Now())
	keep := make(map[string]bool, len(valid))
	for _, h := range valid {
		keep[h] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	gone, err := a.release(ctx, func(x Allocation) bool { return x.Attrs.Node == a.cfg.Node && !keep[x.Handle] })
	for _, al := range gone {
		a.log.Info("garbage-collected address", "addr", al.Addr, "handle", al.Handle)
	}
	if err == nil {
		// Every pending release is settled: done if not valid, in use if valid.
		clear(a.pending)
	}
	a.stats.gcReleased.Add(uint64(len(gone)))
	return gone, err
}

// release removes the allocations that match from every block, retrying the
// blocks that changed under it, and returns what it removed.
func (a *Allocator) release(ctx context.Context, match func(Allocation) bool) ([]Allocation, error) {
	var released []Allocation
	for attempt := range maxAttempts {
		if err := a.pause(ctx, attempt); err != nil {
			return released, err
		}
		blocks, err := a.store.ListBlocks(ctx)
		if err != nil {
			return released, fmt.Errorf("list blocks: %w", err)
		}
		raced := false
		for _, b := range blocks {
			gone := b.removeIf(match)
			if len(gone) == 0 {
				continue
			}
			if err := a.writeShrunk(ctx, b); LostRace(err) {
				a.stats.conflicts.Add(1)
				raced = true
				continue
			} else if err != nil {
				return released, err
			}
			released = append(released, gone...)
		}
		if !raced {
			return released, nil
		}
	}
	return released, fmt.Errorf("release: gave up after %d attempts: %w", maxAttempts, ErrConflict)
}

// writeShrunk stores a block that lost allocations. A block left empty is marked
// so, or deleted at once when it is ours (or nobody's) and there is no grace;
// a damaged block is neither.
func (a *Allocator) writeShrunk(ctx context.Context, b Block) error {
	if len(b.Allocations) == 0 && b.Damaged.IsZero() {
		if a.cfg.ReleaseGrace == 0 && (b.Affinity == a.cfg.Node || b.Affinity == "") {
			if err := a.store.DeleteBlock(ctx, b); err != nil {
				return fmt.Errorf("release block %s: %w", b.CIDR, err)
			}
			a.log.Info("released empty block", "block", b.CIDR)
			if b.Affinity == a.cfg.Node {
				a.stats.blocksReleased.Add(1)
			}
			return nil
		}
		b.EmptySince = a.cfg.Now().UTC()
	}
	if _, err := a.store.UpdateBlock(ctx, b); err != nil {
		return fmt.Errorf("update block %s: %w", b.CIDR, err)
	}
	return nil
}

// ReleaseIdleBlocks gives back this node's blocks that have been empty for longer
// than the grace period, and returns them. Call it periodically.
func (a *Allocator) ReleaseIdleBlocks(ctx context.Context) ([]netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	now := a.cfg.Now().UTC()
	var released []netip.Prefix
	for _, b := range blocks {
		if b.Affinity != a.cfg.Node {
			continue
		}
		if deleted, err := ExpireEmpty(ctx, a.store, b, now, a.cfg.ReleaseGrace); err != nil {
			return released, err
		} else if !deleted {
			continue
		}
		a.log.Info("released idle block", "block", b.CIDR, "emptySince", b.EmptySince)
		a.stats.blocksReleased.Add(1)
		released = append(released, b.CIDR)
	}
	return released, nil
}

// Blocks returns every claimed block, sorted by address.
func (a *Allocator) Blocks(ctx context.Context) ([]Block, error) {
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	sortBlocks(blocks)
	return blocks, nil
}

// listBlocks returns the claimed blocks inside pools, in pool order then address.
func (a *Allocator) listBlocks(ctx context.Context, pools []Pool) ([]Block, error) {
	all, err := a.store.ListBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	poolIndex := func(b Block) int {
		return slices.IndexFunc(pools, func(p Pool) bool { return p.CIDR.Contains(b.CIDR.Addr()) })
	}
	blocks := slices.DeleteFunc(all, func(b Block) bool { return poolIndex(b) < 0 })
	slices.SortFunc(blocks, func(x, y Block) int {
		return cmp.Or(cmp.Compare(poolIndex(x), poolIndex(y)), x.CIDR.Addr().Compare(y.CIDR.Addr()))
	})
	return blocks, nil
}

func (a *Allocator) families(want []Family) ([]Family, error) {
	if len(want) == 0 {
		for _, p := range a.cfg.Pools {
			if !slices.Contains(want, p.Family()) {
				want = append(want, p.Family())
			}
		}
		slices.Sort(want)
		return want, nil
	}
	seen := map[Family]bool{}
	for _, f := range want {
		if f != IPv4 && f != IPv6 {
			return nil, fmt.Errorf("%w: unknown address family %d", ErrInvalid, int(f))
		}
		if seen[f] {
			return nil, fmt.Errorf("%w: family %s asked for twice", ErrInvalid, f)
		}
		seen[f] = true
		if len(a.poolsOf(f)) == 0 {
			return nil, fmt.Errorf("%w: no %s pool is configured", ErrInvalid, f)
		}
	}
	return want, nil
}

func (a *Allocator) poolsOf(f Family) []Pool {
	return slices.DeleteFunc(slices.Clone(a.cfg.Pools), func(p Pool) bool { return p.Family() != f })
}

func firstUnclaimed(pools []Pool, claimed map[netip.Prefix]bool) (netip.Prefix, bool) {
	for _, p := range pools {
		if cidr, ok := p.firstUnclaimed(claimed); ok {
			return cidr, true
		}
	}
	return netip.Prefix{}, false
}

func sortBlocks(blocks []Block) {
	slices.SortFunc(blocks, func(x, y Block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
}

func poolNames(pools []Pool) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = fmt.Sprintf("%s (%s)", p.Name, p.CIDR)
	}
	return strings.Join(names, ", ")
}

// pause waits a little before a retry, longer the more attempts were lost, with
// jitter so that racing nodes do not retry in step, and counts the retry.
func (a *Allocator) pause(ctx context.Context, attempt int) error {
	if attempt == 0 {
		return ctx.Err()
	}
	a.stats.retries.Add(1)
	d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(200*time.Microsecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Kubernetes' limits on what Attrs name: a namespace is a DNS label, a pod
// name a DNS subdomain. Every allocation is stored with its block, so an
// unbounded name would make every write of the block pay for it.
const (
	MaxNamespaceLen = 63
	MaxPodNameLen   = 253
)

// validAttrs checks the pod attributes of a request against Kubernetes'
// limits; the values are not shown.
func validAttrs(at Attrs) error {
	if len(at.Namespace) > MaxNamespaceLen {
		return fmt.Errorf("%w: namespace of %d bytes, at most %d allowed", ErrInvalid, len(at.Namespace), MaxNamespaceLen)
	}
	if len(at.Pod) > MaxPodNameLen {
		return fmt.Errorf("%w: pod name of %d bytes, at most %d allowed", ErrInvalid, len(at.Pod), MaxPodNameLen)
	}
	return nil
}

// validHandle checks a handle: 1 to 512 printable characters without spaces.
func validHandle(h string) error {
	if h == "" {
		return fmt.Errorf("%w: empty handle", ErrInvalid)
	}
	if len(h) > 512 {
		return fmt.Errorf("%w: handle longer than 512 bytes", ErrInvalid)
	}
	if i := strings.IndexFunc(h, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }); i >= 0 {
		return fmt.Errorf("%w: handle %q has a space or control character at byte %d", ErrInvalid, h, i)
	}
	return nil
}
