// Package ipamtest holds an in-memory ipam.Store for unit tests. It keeps the
// Store's compare-and-swap promise exactly, so the allocator's logic can be tested
// without files or an API server; it must never back a real agent.
package ipamtest

import (
	"context"
	"net/netip"
	"strconv"
	"sync"

	"github.com/flatnet-io/flatnet/ipam"
)

// MemStore is an ipam.Store in memory, safe for concurrent use.
type MemStore struct {
	mu     sync.Mutex
	blocks map[netip.Prefix]ipam.Block
	rev    uint64
	// Writes counts successful writes, for tests that count round trips.
	Writes int
}

var _ ipam.Store = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{blocks: map[netip.Prefix]ipam.Block{}} }

// ListBlocks implements ipam.Store.
func (s *MemStore) ListBlocks(ctx context.Context) ([]ipam.Block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ipam.Block, 0, len(s.blocks))
	for _, b := range s.blocks {
		out = append(out, b.Clone())
	}
	return out, nil
}

// GetBlock returns the block claimed at cidr, or ipam.ErrNotFound: the
// contract tests' read of one block (storetest.Store).
func (s *MemStore) GetBlock(ctx context.Context, cidr netip.Prefix) (ipam.Block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blocks[cidr]
	if !ok {
		return ipam.Block{}, ipam.ErrNotFound
	}
	return b.Clone(), nil
}

// CreateBlock implements ipam.Store.
func (s *MemStore) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.blocks[b.CIDR]; ok {
		return ipam.Block{}, ipam.ErrExists
	}
	return s.put(b), nil
}

// UpdateBlock implements ipam.Store.
func (s *MemStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.blocks[b.CIDR]
	if !ok {
		return ipam.Block{}, ipam.ErrNotFound
	}
	if cur.Revision != b.Revision {
		return ipam.Block{}, ipam.ErrConflict
	}
	return s.put(b), nil
}

// DeleteBlock implements ipam.Store.
func (s *MemStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.blocks[b.CIDR]
	if !ok {
		return ipam.ErrNotFound
	}
	if cur.Revision != b.Revision {
		return ipam.ErrConflict
	}
	delete(s.blocks, b.CIDR)
	s.Writes++
	return nil
}

func (s *MemStore) put(b ipam.Block) ipam.Block {
	s.rev++
	b = b.Clone()
	b.Revision = strconv.FormatUint(s.rev, 10)
	s.blocks[b.CIDR] = b
	s.Writes++
	return b.Clone()
}
