package ipam_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

// racingStore loses the next n updates: another writer got there first.
type racingStore struct {
	*ipamtest.MemStore
	mu   sync.Mutex
	lose int
}

func (s *racingStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	s.mu.Lock()
	lose := s.lose > 0
	s.lose--
	s.mu.Unlock()
	if lose {
		return ipam.Block{}, ipam.ErrConflict
	}
	return s.MemStore.UpdateBlock(ctx, b)
}

func TestStatsCountRacesGCAndReleasedBlocks(t *testing.T) {
	ctx := context.Background()
	s := &racingStore{MemStore: ipamtest.NewMemStore()}
	var ops []string
	cfg := ipam.Config{Timed: func(op string, took time.Duration) {
		if took < 0 {
			t.Errorf("%s took %v", op, took)
		}
		ops = append(ops, op)
	}}
	a := newAllocator(t, s, "n1", cfg, pool(t, "p", "10.0.0.0/24", 26))
	alloc(t, a, "a") // claims the block: a create, no update
	s.lose = 2
	alloc(t, a, "b") // loses two updates, wins the third
	if _, err := a.GC(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Release(ctx, "a"); err != nil { // the block empties: released at once (no grace)
		t.Fatal(err)
	}
	want := ipam.Stats{Conflicts: 2, Retries: 2, GCReleased: 1, BlocksReleased: 1}
	if diff := cmp.Diff(want, a.Stats()); diff != "" {
		t.Errorf("Stats() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{ipam.OpAllocate, ipam.OpAllocate, ipam.OpGC, ipam.OpRelease}, ops); diff != "" {
		t.Errorf("timed operations (-want +got):\n%s", diff)
	}
	if got := alloc(t, a, "c"); got[0] != netip.MustParseAddr("10.0.0.0") {
		t.Errorf("after the block was released, c got %v, want the pool's first address", got)
	}
}
