package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// BenchmarkRoundTrip times Allocate and Release through the real agent (gRPC on
// its unix socket, the allocator, the file store) on a node holding a steady 110
// pods, the kubelet's default maximum: each op starts a pod and stops the oldest.
// It reports the median and 99th percentile of single calls of each kind.
func BenchmarkRoundTrip(b *testing.B) {
	const pods = 110
	for _, fsync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync=%v", fsync), func(b *testing.B) {
			cfg := testConfig(b)
			cfg.Datastore.File.Fsync = fsync
			cfg.IPAM.Pools = []config.Pool{{Name: "bench", CIDR: netip.MustParsePrefix("10.40.0.0/16"), BlockSize: 26}}
			c := start(b, cfg)
			ctx := b.Context()
			handle := func(i int) string { return fmt.Sprintf("c%d/eth0", i) }
			for i := range pods {
				if _, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: handle(i)}); err != nil {
					b.Fatal(err)
				}
			}
			var alloc, release []time.Duration
			for i := pods; b.Loop(); i++ {
				start := time.Now()
				if _, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: handle(i)}); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if _, err := c.Release(ctx, &ipampb.ReleaseRequest{Handle: handle(i - pods)}); err != nil {
					b.Fatal(err)
				}
				alloc, release = append(alloc, mid.Sub(start)), append(release, time.Since(mid))
			}
			report(b, "allocate", alloc)
			report(b, "release", release)
		})
	}
}

func report(b *testing.B, what string, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), what+"-p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), what+"-p99-µs")
}
