package metrics

import (
	"context"
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flatnet-io/flatnet/ipam"
)

// ipamCollector reads the allocator's blocks and Stats at scrape time.
type ipamCollector struct {
	a *ipam.Allocator

	poolAddrs, poolUsed, poolBlocks, poolClaimed *prometheus.Desc
	nodeBlocks, nodeUsed, nodeFree, nodeBorrowed *prometheus.Desc
	exhausted                                    *prometheus.Desc
	conflicts, retries, gcReleased, blocksFreed  *prometheus.Desc
}

func newIPAMCollector(a *ipam.Allocator) *ipamCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "ipam", name), help, labels, nil)
	}
	return &ipamCollector{
		a:            a,
		poolAddrs:    d("pool_addresses", "Addresses in the pool.", "pool"),
		poolUsed:     d("pool_addresses_used", "Addresses of the pool allocated, by every node (as this node's datastore sees it).", "pool"),
		poolBlocks:   d("pool_blocks", "Blocks the pool is split into.", "pool"),
		poolClaimed:  d("pool_blocks_claimed", "Blocks of the pool claimed, by every node.", "pool"),
		nodeBlocks:   d("node_blocks", "Blocks of the pool with this node's affinity.", "pool"),
		nodeUsed:     d("node_addresses_used", "Addresses of the pool allocated to this node's pods, borrowed ones included.", "pool"),
		nodeFree:     d("node_addresses_free", "Free addresses in this node's blocks of the pool.", "pool"),
		nodeBorrowed: d("node_addresses_borrowed", "Addresses this node's pods hold in other nodes' blocks of the pool.", "pool"),
		exhausted:    d("exhausted", "1 when this node could not get an address of the family now (no free address in its blocks, no free block, and nothing to borrow); CNI STATUS fails then.", "family"),
		conflicts:    d("cas_conflicts_total", "Datastore writes that lost a race (the block changed, was deleted or claimed since it was read) and were retried."),
		retries:      d("retries_total", "Attempts allocator operations made again after losing a race."),
		gcReleased:   d("gc_released_addresses_total", "Addresses released by garbage collection (GC of handles no longer valid)."),
		blocksFreed:  d("blocks_released_total", "Empty blocks of this node given back to the pool."),
	}
}

func (c *ipamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.poolAddrs, c.poolUsed, c.poolBlocks, c.poolClaimed,
		c.nodeBlocks, c.nodeUsed, c.nodeFree, c.nodeBorrowed, c.exhausted,
		c.conflicts, c.retries, c.gcReleased, c.blocksFreed,
	} {
		ch <- d
	}
}

// poolCounts are one pool's figures.
type poolCounts struct {
	used, claimed                        int
	nodeBlocks, nodeUsed, free, borrowed int
}

func (c *ipamCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	st := c.a.Stats()
	counter(c.conflicts, st.Conflicts)
	counter(c.retries, st.Retries)
	counter(c.gcReleased, st.GCReleased)
	counter(c.blocksFreed, st.BlocksReleased)

	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	blocks, err := c.a.Blocks(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.poolUsed, fmt.Errorf("ipam: %w", err))
		return
	}
	node := c.a.Node()
	counts := map[string]*poolCounts{}
	for _, p := range c.a.Pools() {
		counts[p.Name] = &poolCounts{}
	}
	for _, b := range blocks {
		at, ok := c.a.Placement(b.CIDR.Addr())
		if !ok {
			continue
		}
		pc := counts[at.Pool]
		pc.claimed++
		pc.used += len(b.Allocations)
		if b.Affinity == node {
			pc.nodeBlocks++
			pc.free += b.Free()
		}
		for _, al := range b.Allocations {
			if al.Attrs.Node != node {
				continue
			}
			pc.nodeUsed++
			if b.Affinity != node {
				pc.borrowed++
			}
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range c.a.Pools() {
		pc := counts[p.Name]
		gauge(c.poolAddrs, math.Ldexp(1, p.CIDR.Addr().BitLen()-p.CIDR.Bits()), p.Name)
		gauge(c.poolBlocks, math.Ldexp(1, p.BlockBits()), p.Name)
		gauge(c.poolUsed, float64(pc.used), p.Name)
		gauge(c.poolClaimed, float64(pc.claimed), p.Name)
		gauge(c.nodeBlocks, float64(pc.nodeBlocks), p.Name)
		gauge(c.nodeUsed, float64(pc.nodeUsed), p.Name)
		gauge(c.nodeFree, float64(pc.free), p.Name)
		gauge(c.nodeBorrowed, float64(pc.borrowed), p.Name)
	}
	for f, room := range c.a.Room(blocks) {
		gauge(c.exhausted, b2f(!room), f.String())
	}
}
