package ipam_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

var errDiskFull = errors.New("write block: no space left on device")

// fullStore is a store whose writes fail while full is set, as on a full
// disk: every release rewrites its block.
type fullStore struct {
	*ipamtest.MemStore
	full atomic.Bool
}

func (s *fullStore) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	if s.full.Load() {
		return ipam.Block{}, errDiskFull
	}
	return s.MemStore.CreateBlock(ctx, b)
}

func (s *fullStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	if s.full.Load() {
		return ipam.Block{}, errDiskFull
	}
	return s.MemStore.UpdateBlock(ctx, b)
}

func (s *fullStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	if s.full.Load() {
		return errDiskFull
	}
	return s.MemStore.DeleteBlock(ctx, b)
}

// held returns the handles the store holds addresses for.
func held(t *testing.T, s ipam.Store) []string {
	t.Helper()
	blocks, err := s.ListBlocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range blocks {
		for _, al := range b.Allocations {
			out = append(out, al.Handle)
		}
	}
	slices.Sort(out)
	return out
}

// A release the store cannot write is not lost: it is recorded, reported
// done, and written by RetryReleases once the store takes writes again.
func TestReleaseIsNotLostWhenTheStoreFails(t *testing.T) {
	ctx := context.Background()
	s := &fullStore{MemStore: ipamtest.NewMemStore()}
	a := newAllocator(t, s, "n1", ipam.Config{ReleaseGrace: 1e9}, pool(t, "p", "10.0.0.0/24", 26))
	for _, h := range []string{"h1", "h2", "h3"} {
		alloc(t, a, h)
	}
	s.full.Store(true)
	if _, err := a.Release(ctx, "h1"); err != nil {
		t.Fatalf("Release on a full disk = %v, want it recorded", err)
	}
	if _, err := a.Release(ctx, "h2"); err != nil {
		t.Fatalf("Release on a full disk = %v, want it recorded", err)
	}
	if got := a.PendingReleases(); !slices.Equal(got, []string{"h1", "h2"}) {
		t.Errorf("pending %v, want h1 and h2", got)
	}
	if err := a.RetryReleases(ctx); !errors.Is(err, errDiskFull) {
		t.Errorf("RetryReleases on a full disk = %v", err)
	}
	// The same handle asks again (the pod is back): its address is its
	// own again, and no longer to be released.
	got, err := a.Allocate(ctx, ipam.Request{Handle: "h2"})
	if err != nil || got[0].Addr != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("Allocate(h2) = %v, %v; want its address, 10.0.0.1", got, err)
	}
	s.full.Store(false)
	if err := a.RetryReleases(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(t, s); !slices.Equal(got, []string{"h2", "h3"}) {
		t.Errorf("held after the retry: %v, want h2 and h3", got)
	}
	if got := a.PendingReleases(); len(got) != 0 {
		t.Errorf("still pending: %v", got)
	}
}

// A GC that succeeds settles every pending release: it released what was
// not valid, and what is valid is in use.
func TestGCSettlesPendingReleases(t *testing.T) {
	ctx := context.Background()
	s := &fullStore{MemStore: ipamtest.NewMemStore()}
	a := newAllocator(t, s, "n1", ipam.Config{ReleaseGrace: 1e9}, pool(t, "p", "10.0.0.0/24", 26))
	for _, h := range []string{"h1", "h2"} {
		alloc(t, a, h)
	}
	s.full.Store(true)
	if _, err := a.Release(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	s.full.Store(false)
	if _, err := a.GC(ctx, []string{"h2"}); err != nil {
		t.Fatal(err)
	}
	if got := held(t, s); !slices.Equal(got, []string{"h2"}) {
		t.Errorf("held after GC: %v", got)
	}
	if got := a.PendingReleases(); len(got) != 0 {
		t.Errorf("still pending after GC: %v", got)
	}
}
