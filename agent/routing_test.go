package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/bgptest"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/ipam"
)

var (
	self  = mesh.Node{Name: "node1", IPv4: netip.MustParseAddr("192.0.2.1"), IPv6: netip.MustParseAddr("2001:db8::1"), ASN: 64512}
	other = mesh.Node{Name: "node2", IPv4: netip.MustParseAddr("192.0.2.2"), ASN: 64512}
	pfx   = netip.MustParsePrefix
	addr  = netip.MustParseAddr
	cmpIP = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	cmpPf = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
)

func TestAdvertsOf(t *testing.T) {
	blocks := []ipam.Block{
		{CIDR: pfx("10.244.0.0/26"), Affinity: "node1"},
		{CIDR: pfx("10.244.0.64/26"), Affinity: "node2", Allocations: []ipam.Allocation{
			{Addr: addr("10.244.0.65"), Attrs: ipam.Attrs{Node: "node2"}},
			{Addr: addr("10.244.0.66"), Attrs: ipam.Attrs{Node: "node1"}}, // borrowed
		}},
		{CIDR: pfx("fd00::/122"), Affinity: "node1"},
	}
	adverts, local := advertsOf(self, blocks)
	want := []bgp.Advert{
		{Prefix: pfx("10.244.0.0/26"), NextHop: self.IPv4},
		{Prefix: pfx("10.244.0.66/32"), NextHop: self.IPv4},
		{Prefix: pfx("fd00::/122"), NextHop: self.IPv6},
	}
	if diff := cmp.Diff(want, adverts, cmpIP, cmpPf); diff != "" {
		t.Errorf("adverts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Prefix{pfx("10.244.0.0/26"), pfx("fd00::/122")}, local, cmpPf); diff != "" {
		t.Errorf("blackholes (-want +got):\n%s", diff)
	}
	// No IPv6 address: the IPv6 block is blackholed but not announced.
	v4only := self
	v4only.IPv6 = netip.Addr{}
	adverts, local = advertsOf(v4only, blocks)
	if len(adverts) != 2 || len(local) != 2 {
		t.Errorf("IPv4-only node: adverts %v, blackholes %v", adverts, local)
	}
}

// fakeTable records what routing asks of the dataplane.
type fakeTable struct {
	mu         sync.Mutex
	routes     map[netip.Prefix][]netip.Addr
	blackholes []netip.Prefix
	converged  bool
}

func (f *fakeTable) Upsert(p netip.Prefix, hops []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[p] = hops
	return nil
}

func (f *fakeTable) Delete(p netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, p)
}

func (f *fakeTable) SetBlackholes(p []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blackholes = p
	return nil
}

func (f *fakeTable) MarkConverged() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.converged = true
}

type fakeBlocks struct {
	mu     sync.Mutex
	blocks []ipam.Block
}

func (f *fakeBlocks) Blocks(context.Context) ([]ipam.Block, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocks, nil
}

// memRegistry is a Registry whose set the test changes.
type memRegistry struct{ nodes chan []mesh.Node }

func (m *memRegistry) Register(context.Context, mesh.Node) error { return nil }
func (m *memRegistry) Deregister(context.Context, string) error  { return nil }
func (m *memRegistry) Watch(ctx context.Context, fn func([]mesh.Node)) {
	for {
		select {
		case n := <-m.nodes:
			fn(n)
		case <-ctx.Done():
			return
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

func TestRoutingFlows(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sp := bgptest.New(bgp.Config{ASN: 64512, RouterID: self.IPv4})
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	table := &fakeTable{routes: map[netip.Prefix][]netip.Addr{}}
	blocks := &fakeBlocks{}
	reg := &memRegistry{nodes: make(chan []mesh.Node)}
	changed := make(chan struct{}, 1)
	tor := bgp.Peer{Name: "tor", Address: addr("192.0.2.254"), ASN: 65000}
	log := slog.New(slog.DiscardHandler)
	r := &routing{self: self, speaker: sp, table: table, blocks: blocks, registry: reg,
		peers: newPeerSet(sp, self, bgp.Peer{}, []bgp.Peer{tor}, true, log), changed: changed, resync: time.Hour, log: log}
	go r.run(ctx)

	// A node joins the mesh: it and the ToR are the peers.
	reg.nodes <- []mesh.Node{self, other}
	eventually(t, "mesh peer and ToR configured", func() bool { return len(sp.Peers()) == 2 })
	// It leaves: only the ToR stays.
	reg.nodes <- []mesh.Node{self}
	eventually(t, "mesh peer removed", func() bool { return len(sp.Peers()) == 1 && sp.Peers()[0].Name == "tor" })

	// IPAM claims a block: announced and blackholed on the next change.
	blocks.mu.Lock()
	blocks.blocks = []ipam.Block{{CIDR: pfx("10.244.0.0/26"), Affinity: "node1"}}
	blocks.mu.Unlock()
	changed <- struct{}{}
	eventually(t, "block announced", func() bool { return len(sp.Adverts()) == 1 })
	table.mu.Lock()
	if len(table.blackholes) != 1 {
		t.Errorf("blackholes %v", table.blackholes)
	}
	table.mu.Unlock()

	// Learned routes reach the table; a next hop that is this node is dropped.
	sp.Learn(bgp.Route{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{other.IPv4, self.IPv4}},
		bgp.Route{Prefix: pfx("10.244.2.0/26"), NextHops: []netip.Addr{self.IPv4}})
	eventually(t, "learned route installed", func() bool {
		table.mu.Lock()
		defer table.mu.Unlock()
		return len(table.routes[pfx("10.244.1.0/26")]) == 1
	})
	table.mu.Lock()
	if _, ok := table.routes[pfx("10.244.2.0/26")]; ok {
		t.Error("a route via this node itself was installed")
	}
	table.mu.Unlock()
	sp.Learn(bgp.Route{Prefix: pfx("10.244.1.0/26")})
	eventually(t, "withdrawn route removed", func() bool {
		table.mu.Lock()
		defer table.mu.Unlock()
		return len(table.routes) == 0
	})

	sp.Converge()
	eventually(t, "stale routes released after convergence", func() bool {
		table.mu.Lock()
		defer table.mu.Unlock()
		return table.converged
	})
}

// The explicit peers change under a running mesh: each change is set with the
// last mesh, and nothing is set before both are known, so that the first
// SetPeers (which graceful restart and convergence wait on) has every peer.
func TestPeerSetFollowsBothWatchers(t *testing.T) {
	ctx := t.Context()
	sp := bgptest.New(bgp.Config{ASN: 64512, RouterID: self.IPv4})
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		for _, p := range sp.Peers() {
			out = append(out, p.Name)
		}
		return out
	}
	s := newPeerSet(sp, self, bgp.Peer{}, nil, false, slog.New(slog.DiscardHandler))
	tor := bgp.Peer{Name: "peer-tor", Address: addr("192.0.2.254"), ASN: 65000}
	rr := bgp.Peer{Name: "peer-rr", Address: addr("192.0.2.253"), ASN: 64512}

	s.setNodes(ctx, []mesh.Node{self, other})
	if n := sp.Calls(bgptest.SetPeers); n != 0 {
		t.Fatalf("SetPeers called %d times before the explicit peers were known", n)
	}
	s.setExplicit(ctx, []bgp.Peer{tor})
	if diff := cmp.Diff([]string{"mesh-node2", "peer-tor"}, names()); diff != "" {
		t.Errorf("first SetPeers (-want +got):\n%s", diff)
	}
	s.setExplicit(ctx, []bgp.Peer{tor, rr})
	if diff := cmp.Diff([]string{"mesh-node2", "peer-tor", "peer-rr"}, names()); diff != "" {
		t.Errorf("explicit peer added (-want +got):\n%s", diff)
	}
	s.setNodes(ctx, []mesh.Node{self})
	s.setExplicit(ctx, []bgp.Peer{rr})
	if diff := cmp.Diff([]string{"peer-rr"}, names()); diff != "" {
		t.Errorf("mesh node gone, explicit peer removed (-want +got):\n%s", diff)
	}
}

// Watchers report from their own goroutines; SetPeers calls never overlap
// and the last report of each wins.
func TestPeerSetConcurrentWatchers(t *testing.T) {
	ctx := t.Context()
	sp := bgptest.New(bgp.Config{ASN: 64512, RouterID: self.IPv4})
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s := newPeerSet(sp, self, bgp.Peer{}, nil, false, slog.New(slog.DiscardHandler))
	tor := bgp.Peer{Name: "peer-tor", Address: addr("192.0.2.254"), ASN: 65000}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			s.setNodes(ctx, [][]mesh.Node{{self}, {self, other}}[i%2])
		}
	})
	wg.Go(func() {
		for i := range 200 {
			s.setExplicit(ctx, [][]bgp.Peer{nil, {tor}}[i%2])
		}
	})
	wg.Wait()
	if got := sp.Peers(); len(got) != 2 {
		t.Errorf("peers after the last reports (mesh with node2, the ToR): %v", got)
	}
}
