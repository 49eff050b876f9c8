package bgpbench_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// The convergence lab: two flatnet nodes on one link, an iBGP mesh session
// between them (found through the shared file registry), /30 blocks so that
// every fourth allocation claims a new block.
const convergeTopology = `name: LAB
topology:
  nodes:
    node1:
      kind: linux
      image: ghcr.io/flatnet-io/flatnet-node:latest
      binds: ["node1/flatnet.yaml:/etc/flatnet/flatnet.yaml"]
      exec: ["ip addr add 10.0.0.1/24 dev eth1"]
    node2:
      kind: linux
      image: ghcr.io/flatnet-io/flatnet-node:latest
      binds: ["node2/flatnet.yaml:/etc/flatnet/flatnet.yaml"]
      exec: ["ip addr add 10.0.0.2/24 dev eth1"]
  links:
    - endpoints: ["node1:eth1", "node2:eth1"]
`

const convergeAgentConfig = `log: {level: info, format: text}
datastore:
  type: file
  file: {dir: /var/lib/flatnet/ipam, fsync: false}
ipam:
  pools:
    - {name: pods-v4, cidr: 10.244.0.0/16, blockSize: 30}
bgp:
  enabled: true
  asn: 64512
  nodeIPv4: 10.0.0.%d
  mesh: true
  convergeTimeout: 10s
`

const (
	claimsPerRun  = 50
	blockAddrs    = 4 // a /30
	claimInterval = 30 * time.Millisecond
)

// BenchmarkBlockConvergence claims 50 blocks on node1, one at a time, through
// the agent's IPAM API, and times each from the Allocate call that claims it
// to its route in node2's kernel (seen in node2's route events). After each
// claim the block is filled, so that the next allocation claims the next one,
// and the nodes are left alone for a moment.
//
// Metrics over every claim of b.N runs: p50-ms and p99-ms (nearest rank: of
// 50 claims, the slowest), and alloc-p50-ms, the Allocate call alone.
func BenchmarkBlockConvergence(b *testing.B) {
	requireLab(b)
	var lat, alloc []float64
	for range b.N {
		l, a := convergeOnce(b)
		lat, alloc = append(lat, l...), append(alloc, a...)
	}
	b.ReportMetric(percentile(lat, 0.5), "p50-ms")
	b.ReportMetric(percentile(lat, 0.99), "p99-ms")
	b.ReportMetric(percentile(alloc, 0.5), "alloc-p50-ms")
	b.ReportMetric(0, "ns/op")
}

func convergeOnce(b *testing.B) (latency, alloc []float64) {
	b.Helper()
	l := upLab(b, convergeTopology, map[string]string{
		"node1/flatnet.yaml": fmt.Sprintf(convergeAgentConfig, 1),
		"node2/flatnet.yaml": fmt.Sprintf(convergeAgentConfig, 2),
	})
	defer l.down(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, node := range []string{"node1", "node2"} {
		waitEstablished(b, l, node)
	}
	watch, err := watchRoutes(l.NS("node2"), protoFlatnet)
	if err != nil {
		b.Fatal(err)
	}
	defer watch.close()
	c, err := agentclient.Dial(l.Socket("node1"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	client := c.IPAM
	allocate := func(handle string) (*ipampb.Address, error) {
		resp, err := client.Allocate(ctx, &ipampb.AllocateRequest{Handle: handle, Families: []ipampb.Family{ipampb.Family_FAMILY_IPV4}})
		if err != nil {
			return nil, err
		}
		if len(resp.GetAddresses()) != 1 {
			return nil, fmt.Errorf("allocate %s: %v", handle, resp.GetAddresses())
		}
		return resp.GetAddresses()[0], nil
	}
	// claim allocates the first address of a new block, waits for the
	// block's route on node2, and fills the block, so that the next
	// allocation claims the next one.
	seen := map[netip.Prefix]bool{}
	claim := func(name string) (latency, alloc time.Duration) {
		start := time.Now()
		addr, err := allocate(name)
		allocated := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		block, err := netip.ParsePrefix(addr.GetBlock())
		if err != nil || seen[block] {
			b.Fatalf("%s: came from block %s, not a new one (%v)", name, addr.GetBlock(), err)
		}
		seen[block] = true
		at, err := watch.wait(block, 10*time.Second)
		if err != nil {
			b.Fatalf("%s: node2: %v", name, err)
		}
		for j := 1; j < blockAddrs; j++ {
			if _, err := allocate(fmt.Sprintf("%s-fill-%d", name, j)); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(claimInterval)
		return at.Sub(start), allocated
	}
	claim("warm-up") // the first call dials
	for i := range claimsPerRun {
		l, a := claim(fmt.Sprintf("claim-%d", i))
		latency, alloc = append(latency, ms(l)), append(alloc, ms(a))
	}
	b.Logf("%d claims: node1 claim → node2 kernel p50 %.1f ms, p90 %.1f ms, max %.1f ms; Allocate p50 %.1f ms",
		len(latency), percentile(latency, 0.5), percentile(latency, 0.9), percentile(latency, 1), percentile(alloc, 0.5))
	return latency, alloc
}

// waitEstablished waits until a node's every BGP session is established.
func waitEstablished(b *testing.B, l *benchLab, node string) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := l.AgentStatus(ctx, node)
		cancel()
		up := err == nil && len(st.GetPeers()) > 0
		for _, p := range st.GetPeers() {
			up = up && p.GetState() == "established"
		}
		if up {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: sessions not established after 30s: %v %v", node, st.GetPeers(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
