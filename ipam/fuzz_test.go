package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

// FuzzAllocator drives two nodes with a random sequence of operations over a
// random pool and checks after each one that no address lies outside the pool,
// none is held twice, a handle holds one address per node, and every block is
// a block of the pool.
func FuzzAllocator(f *testing.F) {
	f.Add(uint8(24), uint8(26), false, false, []byte{0, 4, 8, 1, 5, 2, 3})
	f.Add(uint8(30), uint8(31), true, false, []byte{0, 64, 128, 192, 4, 68, 1, 65, 3})
	f.Add(uint8(32), uint8(32), true, false, []byte{0, 4, 64})
	f.Add(uint8(118), uint8(122), false, true, []byte{0, 4, 8, 12, 16, 2, 6, 3, 7})
	f.Add(uint8(0), uint8(0), false, false, []byte{255, 254, 253})
	f.Fuzz(func(t *testing.T, poolBits, blockBits uint8, strict, v6 bool, ops []byte) {
		base, maxBits, minBlock := "10.200.0.0", 32, ipam.MinBlockSizeIPv4
		if v6 {
			base, maxBits, minBlock = "fd00:1::", 128, ipam.MinBlockSizeIPv6
		}
		// A pool of at most 2^12 addresses keeps a run short; any block size goes.
		bits := maxBits - int(poolBits)%13
		bs := bits + int(blockBits)%(maxBits-bits+1)
		if bs < minBlock {
			bs = minBlock + int(blockBits)%(maxBits-minBlock+1)
		}
		cidr := netip.PrefixFrom(netip.MustParseAddr(base), bits).Masked()
		p, err := ipam.NewPool("fuzz", cidr, bs)
		if err != nil {
			if bs < bits { // a block larger than its pool is refused, rightly
				return
			}
			t.Fatalf("NewPool(%s, %d): %v", cidr, bs, err)
		}
		if len(ops) > 256 { // longer runs repeat the same states, only slower
			ops = ops[:256]
		}
		ctx := context.Background()
		s := ipamtest.NewMemStore()
		clk := &clock{now: time.Unix(0, 0)}
		var nodes [2]*ipam.Allocator
		for i := range nodes {
			nodes[i] = newAllocator(t, s, fmt.Sprintf("n%d", i), ipam.Config{StrictAffinity: strict, ReleaseGrace: time.Second, Now: clk.Now}, p)
		}
		for _, op := range ops {
			a := nodes[op>>7]
			h := fmt.Sprintf("h%d", (op>>2)&0x1f)
			switch op & 3 {
			case 0:
				_, err = a.Allocate(ctx, ipam.Request{Handle: h})
				if errors.Is(err, ipam.ErrExhausted) {
					err = nil
				}
			case 1:
				_, err = a.Release(ctx, h)
			case 2:
				_, err = a.GC(ctx, []string{h})
			case 3:
				clk.now = clk.now.Add(time.Duration(op) * 10 * time.Millisecond)
				_, err = a.ReleaseIdleBlocks(ctx)
			}
			if err != nil {
				t.Fatalf("op %08b: %v", op, err)
			}
			check(t, s, p)
		}
	})
}

func check(t *testing.T, s ipam.Store, p ipam.Pool) {
	t.Helper()
	blocks, err := s.ListBlocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	type nodeHandle struct{ node, handle string } // a handle is its node's
	handles := map[nodeHandle]bool{}
	for _, b := range blocks {
		if b.CIDR.Bits() != p.BlockSize || !p.CIDR.Contains(b.CIDR.Addr()) || b.CIDR.Masked() != b.CIDR {
			t.Fatalf("block %s is not a /%d block of %s", b.CIDR, p.BlockSize, p.CIDR)
		}
		for _, al := range b.Allocations {
			if !b.CIDR.Contains(al.Addr) {
				t.Fatalf("address %s outside its block %s", al.Addr, b.CIDR)
			}
			if seen[al.Addr] {
				t.Fatalf("address %s held twice", al.Addr)
			}
			key := nodeHandle{al.Attrs.Node, al.Handle}
			if handles[key] {
				t.Fatalf("handle %s holds two addresses of one family on %s", al.Handle, al.Attrs.Node)
			}
			seen[al.Addr], handles[key] = true, true
		}
	}
}
