package ipam_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

// Every write the allocator makes is told to Changed, with the block as
// stored; Resync tells every block.
func TestChangedFollowsEveryWrite(t *testing.T) {
	ctx := context.Background()
	s := ipamtest.NewMemStore()
	var got []ipam.Change
	a := newAllocator(t, s, "node1", ipam.Config{Changed: func(c ipam.Change) { got = append(got, c) }}, pool(t, "v4", "10.0.0.0/24", 30))
	block := netip.MustParsePrefix("10.0.0.0/30")

	alloc(t, a, "a/eth0")
	alloc(t, a, "b/eth0")
	if len(got) != 2 || len(got[1].Blocks) != 1 || got[1].Blocks[0].CIDR != block || len(got[1].Blocks[0].Allocations) != 2 || got[1].Full {
		t.Fatalf("after a claim and an allocation: %+v", got)
	}
	stored, _ := s.ListBlocks(ctx)
	if got[1].Blocks[0].Revision != stored[0].Revision {
		t.Errorf("change carries revision %q, store has %q", got[1].Blocks[0].Revision, stored[0].Revision)
	}
	for _, h := range []string{"a/eth0", "b/eth0"} {
		if _, err := a.Release(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	// No grace: the emptied block is released at once.
	if last := got[len(got)-1]; !slices.Equal(last.Deleted, []netip.Prefix{block}) {
		t.Errorf("last change after releasing everything = %+v, want block %s deleted", last, block)
	}

	// A write of someone else is only seen by Resync.
	other := newAllocator(t, s, "node2", ipam.Config{}, pool(t, "v4", "10.0.0.0/24", 30))
	alloc(t, other, "c/eth0")
	n := len(got)
	if err := a.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 || !got[n].Full || len(got[n].Blocks) != 1 || got[n].Blocks[0].Affinity != "node2" {
		t.Errorf("Resync told %+v, want node2's block as a full list", got[n:])
	}
}
