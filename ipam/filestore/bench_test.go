package filestore_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
)

// The benchmarks run flatnet's allocator on its file store side by side with the
// reference, host-local's allocator on its disk store, in one process over the
// same /16. host-local serves one node and never fsyncs; flatnet coordinates
// blocks across nodes and, by default, fsyncs every write. DurableWriteFloor is
// the disk's own price of one fsync'ed write, the floor under flatnet's default.

var benchPool = ipam.Pool{Name: "bench", CIDR: netip.MustParsePrefix("10.30.0.0/16"), BlockSize: 26}

// ipamImpl is one allocator under comparison, behind the two calls the
// benchmarks make.
type ipamImpl struct {
	name string
	new  func(b *testing.B) (alloc func(i int) error, release func(i int) error)
}

var impls = []ipamImpl{
	{"flatnet", flatnet(filestore.Options{})},
	{"flatnet-nofsync", flatnet(filestore.Options{SkipFsync: true})},
	{"host-local", hostLocal},
}

func flatnet(opts filestore.Options) func(b *testing.B) (func(int) error, func(int) error) {
	return func(b *testing.B) (func(int) error, func(int) error) {
		s, err := filestore.Open(b.TempDir(), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		a, err := ipam.New(s, ipam.Config{Node: "bench", Pools: []ipam.Pool{benchPool}})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		handle := func(i int) string { return fmt.Sprintf("c%d/eth0", i) }
		return func(i int) error {
				_, err := a.Allocate(ctx, ipam.Request{Handle: handle(i)})
				return err
			}, func(i int) error {
				_, err := a.Release(ctx, handle(i))
				return err
			}
	}
}

func hostLocal(b *testing.B) (func(int) error, func(int) error) {
	store, err := disk.New("bench", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	_, subnet, _ := net.ParseCIDR(benchPool.CIDR.String())
	rs := allocator.RangeSet{{Subnet: types.IPNet(*subnet)}}
	if err := rs.Canonicalize(); err != nil {
		b.Fatal(err)
	}
	a := allocator.NewIPAllocator(&rs, store, 0)
	id := func(i int) string { return fmt.Sprintf("c%d", i) }
	return func(i int) error {
			_, err := a.Get(id(i), "eth0", nil)
			return err
		}, func(i int) error {
			return a.Release(id(i), "eth0")
		}
}

// BenchmarkAllocate allocates into a store that grows from empty.
func BenchmarkAllocate(b *testing.B) {
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			alloc, _ := impl.new(b)
			for i := 0; b.Loop(); i++ {
				if err := alloc(i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRelease releases what was allocated, oldest first.
func BenchmarkRelease(b *testing.B) {
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			alloc, release := impl.new(b)
			for i := range b.N {
				if err := alloc(i); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if err := release(i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChurn is a node at a steady 110 pods (the kubelet's default maximum):
// each op starts one pod and stops the oldest, an allocation and a release.
func BenchmarkChurn(b *testing.B) {
	const pods = 110
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			alloc, release := impl.new(b)
			for i := range pods {
				if err := alloc(i); err != nil {
					b.Fatal(err)
				}
			}
			for i := pods; b.Loop(); i++ {
				if err := alloc(i); err != nil {
					b.Fatal(err)
				}
				if err := release(i - pods); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDurableWriteFloor is what the disk charges for one durable replace of
// a 4 KiB file (temporary file, fsync, rename): no store can acknowledge a
// durable write faster.
func BenchmarkDurableWriteFloor(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 4096)
	for b.Loop() {
		f, err := os.CreateTemp(dir, ".tmp-")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := os.Rename(f.Name(), filepath.Join(dir, "block.json")); err != nil {
			b.Fatal(err)
		}
	}
}
