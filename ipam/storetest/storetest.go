// Package storetest is the contract every ipam.Store must keep, as a test suite:
// each Store implementation runs it against itself, so the allocator can rely on
// the same compare-and-swap behaviour whatever keeps the data. It also holds
// the scaffolding of the multi-process tests (multiprocess.go): the test binary
// run again as allocating children, killed or not, and the checks of what they
// leave behind.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flatnet-io/flatnet/ipam"
)

// Store is what the contract tests: an ipam.Store, and a read of one block
// straight from where the store keeps it (no cache), to check what a write
// left. The allocator never reads one block: GetBlock is the tests' alone.
type Store interface {
	ipam.Store
	GetBlock(ctx context.Context, cidr netip.Prefix) (ipam.Block, error)
}

// Run runs the contract against stores made by newStore, one fresh store a test.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("CreateGet", func(t *testing.T) { testCreateGet(t, newStore(t)) })
	t.Run("CreateTwice", func(t *testing.T) { testCreateTwice(t, newStore(t)) })
	t.Run("UpdateCAS", func(t *testing.T) { testUpdateCAS(t, newStore(t)) })
	t.Run("DeleteCAS", func(t *testing.T) { testDeleteCAS(t, newStore(t)) })
	t.Run("ListIsACopy", func(t *testing.T) { testListIsACopy(t, newStore(t)) })
	t.Run("ConcurrentCAS", func(t *testing.T) { testConcurrentCAS(t, newStore(t)) })
	t.Run("NoABA", func(t *testing.T) { testNoABA(t, newStore(t)) })
}

// RunPair checks that two handles on the same data (two agents on one host, two
// API clients) see each other's writes and cannot overwrite them blindly.
func RunPair(t *testing.T, a, b Store) {
	ctx := context.Background()
	va, err := a.CreateBlock(ctx, sample("10.0.0.0/26"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateBlock(ctx, sample("10.0.0.0/26")); !errors.Is(err, ipam.ErrExists) {
		t.Errorf("claim through the second handle = %v, want ErrExists", err)
	}
	vb, err := b.GetBlock(ctx, va.CIDR)
	if err != nil || vb.Revision != va.Revision {
		t.Fatalf("second handle reads revision %q (%v), want %q", vb.Revision, err, va.Revision)
	}
	vb.Affinity = "node2"
	if _, err := b.UpdateBlock(ctx, vb); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateBlock(ctx, va); !errors.Is(err, ipam.ErrConflict) {
		t.Errorf("stale update through the first handle = %v, want ErrConflict", err)
	}
}

// testNoABA: a block deleted and claimed again must not accept an update made
// from a copy read before the delete, or an address could be handed out twice.
func testNoABA(t *testing.T, s Store) {
	ctx := context.Background()
	old, err := s.CreateBlock(ctx, sample("10.0.0.0/26"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlock(ctx, old); err != nil {
		t.Fatal(err)
	}
	again := sample("10.0.0.0/26")
	again.Affinity = "node2"
	if _, err := s.CreateBlock(ctx, again); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateBlock(ctx, old); !errors.Is(err, ipam.ErrConflict) {
		t.Errorf("update from a copy read before delete and re-claim = %v, want ErrConflict", err)
	}
}

var ignoreRevision = cmpopts.IgnoreFields(ipam.Block{}, "Revision")

func sample(cidr string) ipam.Block {
	p := netip.MustParsePrefix(cidr)
	return ipam.Block{
		CIDR:     p,
		Affinity: "node1",
		Allocations: []ipam.Allocation{{
			Addr:      p.Addr(),
			Handle:    "c1/eth0",
			Attrs:     ipam.Attrs{Node: "node1", Namespace: "default", Pod: "web-0"},
			Allocated: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		}},
	}
}

func testCreateGet(t *testing.T, s Store) {
	ctx := context.Background()
	for _, cidr := range []string{"10.0.0.0/26", "fd00::/122"} {
		want := sample(cidr)
		created, err := s.CreateBlock(ctx, want)
		if err != nil {
			t.Fatalf("CreateBlock(%s): %v", cidr, err)
		}
		if created.Revision == "" {
			t.Errorf("CreateBlock(%s) returned no revision", cidr)
		}
		got, err := s.GetBlock(ctx, want.CIDR)
		if err != nil {
			t.Fatalf("GetBlock(%s): %v", cidr, err)
		}
		if diff := cmp.Diff(want, got, ignoreRevision, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
			t.Errorf("GetBlock(%s) mismatch (-want +got):\n%s", cidr, diff)
		}
		if got.Revision != created.Revision {
			t.Errorf("GetBlock(%s) revision %q, created %q", cidr, got.Revision, created.Revision)
		}
	}
	if _, err := s.GetBlock(ctx, netip.MustParsePrefix("10.9.9.0/26")); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("GetBlock(missing) = %v, want ErrNotFound", err)
	}
	list, err := s.ListBlocks(ctx)
	if err != nil || len(list) != 2 {
		t.Errorf("ListBlocks = %d blocks, %v; want 2", len(list), err)
	}
}

func testCreateTwice(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.CreateBlock(ctx, sample("10.0.0.0/26")); err != nil {
		t.Fatal(err)
	}
	other := sample("10.0.0.0/26")
	other.Affinity = "node2"
	if _, err := s.CreateBlock(ctx, other); !errors.Is(err, ipam.ErrExists) {
		t.Fatalf("second CreateBlock = %v, want ErrExists", err)
	}
	got, _ := s.GetBlock(ctx, other.CIDR)
	if got.Affinity != "node1" {
		t.Errorf("block affinity %q after losing claim, want node1", got.Affinity)
	}
}

func testUpdateCAS(t *testing.T, s Store) {
	ctx := context.Background()
	v1, err := s.CreateBlock(ctx, sample("10.0.0.0/26"))
	if err != nil {
		t.Fatal(err)
	}
	v1.Affinity = "node2"
	v2, err := s.UpdateBlock(ctx, v1)
	if err != nil {
		t.Fatalf("UpdateBlock with current revision: %v", err)
	}
	if v2.Revision == v1.Revision {
		t.Errorf("revision did not change on update: %q", v2.Revision)
	}
	v1.Affinity = "node3" // v1 is stale now
	if _, err := s.UpdateBlock(ctx, v1); !errors.Is(err, ipam.ErrConflict) {
		t.Errorf("UpdateBlock with stale revision = %v, want ErrConflict", err)
	}
	if got, _ := s.GetBlock(ctx, v1.CIDR); got.Affinity != "node2" {
		t.Errorf("affinity %q after stale update, want node2", got.Affinity)
	}
	missing := sample("10.0.1.0/26")
	missing.Revision = v2.Revision
	if _, err := s.UpdateBlock(ctx, missing); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("UpdateBlock(missing) = %v, want ErrNotFound", err)
	}
}

func testDeleteCAS(t *testing.T, s Store) {
	ctx := context.Background()
	v1, err := s.CreateBlock(ctx, sample("10.0.0.0/26"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.UpdateBlock(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlock(ctx, v1); !errors.Is(err, ipam.ErrConflict) {
		t.Errorf("DeleteBlock with stale revision = %v, want ErrConflict", err)
	}
	if err := s.DeleteBlock(ctx, v2); err != nil {
		t.Errorf("DeleteBlock with current revision: %v", err)
	}
	if _, err := s.GetBlock(ctx, v2.CIDR); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("GetBlock after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteBlock(ctx, v2); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("second DeleteBlock = %v, want ErrNotFound", err)
	}
	// The CIDR can be claimed again.
	if _, err := s.CreateBlock(ctx, sample("10.0.0.0/26")); err != nil {
		t.Errorf("CreateBlock after delete: %v", err)
	}
}

func testListIsACopy(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.CreateBlock(ctx, sample("10.0.0.0/26")); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list[0].Allocations[0].Handle = "changed"
	got, _ := s.GetBlock(ctx, list[0].CIDR)
	if got.Allocations[0].Handle != "c1/eth0" {
		t.Errorf("changing a listed block changed the store: handle %q", got.Allocations[0].Handle)
	}
}

// testConcurrentCAS has writers race to append to one block; compare-and-swap
// must let every append land exactly once.
func testConcurrentCAS(t *testing.T, s Store) {
	ctx := context.Background()
	base := sample("10.0.0.0/26")
	base.Allocations = nil
	if _, err := s.CreateBlock(ctx, base); err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				for {
					b, err := s.GetBlock(ctx, base.CIDR)
					if err != nil {
						errs <- err
						return
					}
					b.Allocations = append(b.Allocations, ipam.Allocation{Handle: fmt.Sprintf("w%d-%d", w, i)})
					if _, err = s.UpdateBlock(ctx, b); err == nil {
						break
					} else if !errors.Is(err, ipam.ErrConflict) {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	b, _ := s.GetBlock(ctx, base.CIDR)
	seen := map[string]bool{}
	for _, a := range b.Allocations {
		if seen[a.Handle] {
			t.Errorf("handle %s stored twice", a.Handle)
		}
		seen[a.Handle] = true
	}
	if len(seen) != writers*each {
		t.Errorf("%d appends landed, want %d", len(seen), writers*each)
	}
}
