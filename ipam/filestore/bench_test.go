package filestore_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
)

// The benchmarks run flatnet's allocator on its file store side by side with the
// reference, host-local's allocator on its disk store, in the same process over
// the same /16. host-local only serves one node and does not fsync; flatnet
// coordinates blocks across nodes and fsyncs every write.

var benchPool = ipam.Pool{Name: "bench", CIDR: netip.MustParsePrefix("10.30.0.0/16"), BlockSize: 26}

func newFlatnet(b *testing.B) *ipam.Allocator {
	s, err := filestore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	a, err := ipam.New(s, ipam.Config{Node: "bench", Pools: []ipam.Pool{benchPool}})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func newHostLocal(b *testing.B) (*allocator.IPAllocator, *disk.Store) {
	store, err := disk.New("bench", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR(benchPool.CIDR.String())
	rs := allocator.RangeSet{{Subnet: types.IPNet(*subnet)}}
	if err := rs.Canonicalize(); err != nil {
		b.Fatal(err)
	}
	return allocator.NewIPAllocator(&rs, store, 0), store
}

func BenchmarkAllocate(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=flatnet", func(b *testing.B) {
		a := newFlatnet(b)
		for i := 0; b.Loop(); i++ {
			if _, err := a.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("c%d/eth0", i)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=host-local", func(b *testing.B) {
		a, _ := newHostLocal(b)
		for i := 0; b.Loop(); i++ {
			if _, err := a.Get(fmt.Sprintf("c%d", i), "eth0", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRelease(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=flatnet", func(b *testing.B) {
		a := newFlatnet(b)
		for i := range b.N {
			if _, err := a.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("c%d/eth0", i)}); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for i := range b.N {
			if _, err := a.Release(ctx, fmt.Sprintf("c%d/eth0", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=host-local", func(b *testing.B) {
		a, _ := newHostLocal(b)
		for i := range b.N {
			if _, err := a.Get(fmt.Sprintf("c%d", i), "eth0", nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		for i := range b.N {
			if err := a.Release(fmt.Sprintf("c%d", i), "eth0"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
