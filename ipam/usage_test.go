package ipam_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

func TestPlacement(t *testing.T) {
	a := newAllocator(t, ipamtest.NewMemStore(), "node1", ipam.Config{},
		pool(t, "v4", "10.0.0.0/24", 26), pool(t, "v6", "fd00::/120", 122))
	for addr, want := range map[string]ipam.Placement{
		"10.0.0.70": {Pool: "v4", Block: netip.MustParsePrefix("10.0.0.64/26")},
		"fd00::41":  {Pool: "v6", Block: netip.MustParsePrefix("fd00::40/122")},
	} {
		if got, ok := a.Placement(netip.MustParseAddr(addr)); !ok || got != want {
			t.Errorf("Placement(%s) = %+v, %v; want %+v", addr, got, ok, want)
		}
	}
	if got, ok := a.Placement(netip.MustParseAddr("192.0.2.1")); ok {
		t.Errorf("Placement outside the pools = %+v, want none", got)
	}
}

// Room answers what Allocate would find: a family is full exactly when the
// next allocation of it fails with ErrExhausted.
func TestRoomAgreesWithAllocate(t *testing.T) {
	ctx := context.Background()
	for _, strict := range []bool{false, true} {
		s := ipamtest.NewMemStore()
		cfg := ipam.Config{StrictAffinity: strict}
		v4, v6 := pool(t, "v4", "10.0.0.0/30", 31), pool(t, "v6", "fd00::/126", 126)
		node1 := newAllocator(t, s, "node1", cfg, v4, v6)
		node2 := newAllocator(t, s, "node2", cfg, v4, v6)
		room := func(a *ipam.Allocator) map[ipam.Family]bool {
			blocks, err := a.Blocks(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return a.Room(blocks)
		}
		want := map[ipam.Family]bool{ipam.IPv4: true, ipam.IPv6: true}
		if diff := cmp.Diff(want, room(node1)); diff != "" {
			t.Errorf("strict=%v: empty pools (-want +got):\n%s", strict, diff)
		}
		// node1 claims one IPv4 block, node2 the other and fills it.
		alloc(t, node1, "a/eth0", ipam.IPv4)
		alloc(t, node2, "b/eth0", ipam.IPv4)
		alloc(t, node2, "c/eth0", ipam.IPv4)
		if got := room(node2)[ipam.IPv4]; got != !strict {
			t.Errorf("strict=%v: node2's IPv4 room = %v, want %v (a free address in node1's block)", strict, got, !strict)
		}
		for _, h := range []string{"d/eth0", "e/eth0"} {
			r := room(node2)[ipam.IPv4]
			_, err := node2.Allocate(ctx, ipam.Request{Handle: h, Families: []ipam.Family{ipam.IPv4}})
			if errors.Is(err, ipam.ErrExhausted) == r {
				t.Errorf("strict=%v: Allocate(%s) = %v, but Room said room=%v", strict, h, err, r)
			}
		}
		if !room(node1)[ipam.IPv6] {
			t.Errorf("strict=%v: IPv6 untouched, but no room", strict)
		}
	}
}
