package cni_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab/netns"
	"github.com/flatnet-io/flatnet/test/harness"
)

// cniUnderTest is one pod network as a runtime would call it.
type cniUnderTest struct {
	name     string
	conflist func(b *testing.B, n *node) string
}

// The reference is what Debian ships: ptp (veth, /32-style host routes) with
// host-local IPAM, through the same libcni, in the same kind of node. The
// flatnet agent here does not fsync, and host-local does not either.
var cnisUnderTest = []cniUnderTest{
	{"flatnet", func(b *testing.B, n *node) string { return fmt.Sprintf(conflist11, n.agent.Socket) }},
	{"ptp+host-local", func(b *testing.B, _ *node) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ptp", "plugins": [{"type": "ptp", "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.0.0/16"}]], "dataDir": %q}}]}`, b.TempDir())
	}},
}

// BenchmarkCNI measures ADD and DEL of one pod at a time (pod namespaces are
// made outside the timer), reporting medians and p99 per verb, and the wall
// time for 20 ADDs at once, for flatnet and for ptp+host-local side by side.
// make bench runs it; compare the two with benchstat.
func BenchmarkCNI(b *testing.B) {
	for _, c := range cnisUnderTest {
		b.Run("impl="+c.name+"/op=sequential", func(b *testing.B) {
			n := newNode(b, harness.AgentConfig{Pools: []harness.Pool{{Name: "v4", CIDR: "10.244.0.0/16", BlockSize: 26}}}, "")
			n.rt = harness.NewRuntime(b, n.NetNS, c.conflist(b, n))
			var adds, dels []time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				p := harness.NewPod(b, "bench")
				b.StartTimer()
				t0 := time.Now()
				if _, err := n.rt.Add(p); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := n.rt.Del(p); err != nil {
					b.Fatal(err)
				}
				adds, dels = append(adds, t1.Sub(t0)), append(dels, time.Since(t1))
				b.StopTimer()
				p.Close()
				_, _ = netns.Run("ip", "netns", "del", p.Name)
				b.StartTimer()
			}
			reportQuantiles(b, "add", adds)
			reportQuantiles(b, "del", dels)
		})
		b.Run("impl="+c.name+"/op=20-concurrent-adds", func(b *testing.B) {
			n := newNode(b, harness.AgentConfig{Pools: []harness.Pool{{Name: "v4", CIDR: "10.244.0.0/16", BlockSize: 26}}}, "")
			n.rt = harness.NewRuntime(b, n.NetNS, c.conflist(b, n))
			var walls []time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				pods := make([]*harness.Pod, 20)
				for i := range pods {
					pods[i] = harness.NewPod(b, "bench")
				}
				b.StartTimer()
				t0 := time.Now()
				var wg sync.WaitGroup
				for _, p := range pods {
					wg.Go(func() {
						if _, err := n.rt.Add(p); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				walls = append(walls, time.Since(t0))
				b.StopTimer()
				for _, p := range pods {
					wg.Go(func() { _ = n.rt.Del(p) })
				}
				wg.Wait()
				for _, p := range pods {
					p.Close()
					_, _ = netns.Run("ip", "netns", "del", p.Name)
				}
				b.StartTimer()
			}
			reportQuantiles(b, "wall20", walls)
		})
	}
}

func reportQuantiles(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	ms := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / 1e6 }
	b.ReportMetric(ms(0.5), name+"-p50-ms")
	b.ReportMetric(ms(0.99), name+"-p99-ms")
	b.ReportMetric(0, "ns/op")
}
