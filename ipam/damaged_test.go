package ipam_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

// A block recovered from a damaged copy (Block.Damaged) may have lost
// allocations whose pods still hold their addresses: no new address is
// placed in it, it is never released as empty, but what it lists is served
// and released as usual.
func TestDamagedBlockServesReleasesOnly(t *testing.T) {
	ctx := context.Background()
	s := ipamtest.NewMemStore()
	p := pool(t, "p", "10.0.0.0/25", 26) // two blocks
	clk := &clock{now: time.Unix(1000, 0)}
	a := newAllocator(t, s, "n1", ipam.Config{ReleaseGrace: time.Minute, Now: clk.Now}, p)
	damaged, err := s.CreateBlock(ctx, ipam.Block{
		CIDR: netip.MustParsePrefix("10.0.0.0/26"), Affinity: "n1", Damaged: clk.now,
		Allocations: []ipam.Allocation{{Addr: netip.MustParseAddr("10.0.0.0"), Handle: "kept", Attrs: ipam.Attrs{Node: "n1"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The handle it lists is still this handle's.
	if got := alloc(t, a, "kept"); got[0] != netip.MustParseAddr("10.0.0.0") {
		t.Errorf("kept: %v, want 10.0.0.0", got)
	}
	// A new pod gets an address in another block, though the damaged one
	// has room.
	if got := alloc(t, a, "new"); got[0] != netip.MustParseAddr("10.0.0.64") {
		t.Errorf("new: %v, want 10.0.0.64, outside the damaged block", got)
	}
	if room := a.Room(mustBlocks(t, a)); !room[ipam.IPv4] {
		t.Error("Room: none, though the second block has room")
	}
	// Once the other block is full, the pool is exhausted.
	for i := range 63 {
		alloc(t, a, "fill"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "more"}); err == nil {
		t.Error("Allocate placed an address in the damaged block")
	}
	if room := a.Room(mustBlocks(t, a)); room[ipam.IPv4] {
		t.Error("Room: the damaged block counted as room")
	}
	// Its allocation is released as usual; emptied, it stays claimed.
	if gone, err := a.Release(ctx, "kept"); err != nil || len(gone) != 1 {
		t.Fatalf("Release(kept) = %v, %v", gone, err)
	}
	clk.now = clk.now.Add(time.Hour)
	for range 2 {
		if _, err := a.ReleaseIdleBlocks(ctx); err != nil {
			t.Fatal(err)
		}
		clk.now = clk.now.Add(time.Hour)
	}
	b, err := s.GetBlock(ctx, damaged.CIDR)
	if err != nil {
		t.Fatalf("the damaged block was released: %v", err)
	}
	if b.Damaged.IsZero() || len(b.Allocations) != 0 {
		t.Errorf("damaged block now %+v", b)
	}
}

func mustBlocks(t *testing.T, a *ipam.Allocator) []ipam.Block {
	t.Helper()
	blocks, err := a.Blocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}
