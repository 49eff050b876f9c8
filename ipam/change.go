package ipam

import (
	"context"
	"fmt"
	"net/netip"
)

// Change is what the allocator wrote, as Config.Changed is told it.
type Change struct {
	// Blocks are blocks as they are stored now: claimed or updated by a
	// write, or, with Full, every claimed block.
	Blocks []Block
	// Deleted are blocks a write released.
	Deleted []netip.Prefix
	// Full says Blocks is every claimed block (Resync): a block not in it
	// is gone.
	Full bool
}

// Resync tells Config.Changed every claimed block, as one Full change, in
// order with the changes of writes. It is the safety net for what the
// allocator does not write itself: other nodes' writes, the garbage
// collector's. Without Config.Changed it does nothing.
func (a *Allocator) Resync(ctx context.Context) error {
	if a.cfg.Changed == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	blocks, err := a.store.ListBlocks(ctx)
	if err != nil {
		return fmt.Errorf("list blocks: %w", err)
	}
	sortBlocks(blocks)
	a.cfg.Changed(Change{Blocks: blocks, Full: true})
	return nil
}

// reportingStore is the allocator's store: every successful write is told
// to changed, under the allocator's lock, so in the order of the writes.
type reportingStore struct {
	Store
	changed func(Change)
}

func (s reportingStore) CreateBlock(ctx context.Context, b Block) (Block, error) {
	b, err := s.Store.CreateBlock(ctx, b)
	if err == nil {
		s.changed(Change{Blocks: []Block{b.Clone()}})
	}
	return b, err
}

func (s reportingStore) UpdateBlock(ctx context.Context, b Block) (Block, error) {
	b, err := s.Store.UpdateBlock(ctx, b)
	if err == nil {
		s.changed(Change{Blocks: []Block{b.Clone()}})
	}
	return b, err
}

func (s reportingStore) DeleteBlock(ctx context.Context, b Block) error {
	err := s.Store.DeleteBlock(ctx, b)
	if err == nil {
		s.changed(Change{Deleted: []netip.Prefix{b.CIDR}})
	}
	return err
}
