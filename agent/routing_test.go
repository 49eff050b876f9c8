package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
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

// fakeIPAM is the allocator as routing sees it: Resync tells blocks what
// the test set.
type fakeIPAM struct {
	mu      sync.Mutex
	all     []ipam.Block
	resyncs int
	blocks  *ownBlocks
}

func (f *fakeIPAM) Resync(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resyncs++
	f.blocks.apply(ipam.Change{Blocks: f.all, Full: true})
	return nil
}

// memRegistry is a Registry whose set the test changes.
type memRegistry struct{ nodes chan []mesh.Node }

func (m *memRegistry) Register(context.Context, mesh.Node) error { return nil }
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
	sp := bgptest.New(bgp.Config{ASN: 64512, RouterID: self.IPv4})
	if err := sp.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	table := &fakeTable{routes: map[netip.Prefix][]netip.Addr{}}
	blocks := newOwnBlocks(self.Name)
	fake := &fakeIPAM{blocks: blocks, all: []ipam.Block{{CIDR: pfx("10.244.9.0/26"), Affinity: "node1"}}}
	reg := &memRegistry{nodes: make(chan []mesh.Node)}
	tor := bgp.Peer{Name: "tor", Address: addr("192.0.2.254"), ASN: 65000}
	log := slog.New(slog.DiscardHandler)
	r := &routing{self: self, speaker: sp, table: table, blocks: blocks, ipam: fake,
		peers: newPeerSet(sp, self, bgp.Peer{}, []bgp.Peer{tor}, true, log), resync: time.Hour, log: log}
	r.watch = append(r.watch, func(ctx context.Context) { reg.Watch(ctx, func(n []mesh.Node) { r.peers.setNodes(ctx, n) }) })
	r.start(t.Context())
	stopped := false
	defer func() {
		if !stopped {
			r.stop(false)
		}
	}()
	advertised := func() []netip.Prefix {
		var out []netip.Prefix
		for _, a := range sp.Adverts() {
			out = append(out, a.Prefix)
		}
		return out
	}

	// At start, what the first resync listed is announced.
	eventually(t, "the resync's block announced", func() bool { return slices.Equal(advertised(), []netip.Prefix{pfx("10.244.9.0/26")}) })

	// A node joins the mesh: it and the ToR are the peers.
	reg.nodes <- []mesh.Node{self, other}
	eventually(t, "mesh peer and ToR configured", func() bool { return len(sp.Peers()) == 2 })
	// It leaves: only the ToR stays.
	reg.nodes <- []mesh.Node{self}
	eventually(t, "mesh peer removed", func() bool { return len(sp.Peers()) == 1 && sp.Peers()[0].Name == "tor" })

	// The allocator claims a block and borrows an address: both announced,
	// the block blackholed, from what the writes carried (no resync).
	blocks.apply(ipam.Change{Blocks: []ipam.Block{{CIDR: pfx("10.244.0.0/26"), Affinity: "node1"}}})
	blocks.apply(ipam.Change{Blocks: []ipam.Block{{CIDR: pfx("10.244.1.0/26"), Affinity: "node2", Allocations: []ipam.Allocation{
		{Addr: addr("10.244.1.5"), Attrs: ipam.Attrs{Node: "node1"}},
	}}}})
	want := []netip.Prefix{pfx("10.244.0.0/26"), pfx("10.244.1.5/32"), pfx("10.244.9.0/26")}
	eventually(t, "claimed block and borrowed address announced", func() bool { return slices.Equal(advertised(), want) })
	table.mu.Lock()
	if diff := cmp.Diff([]netip.Prefix{pfx("10.244.0.0/26"), pfx("10.244.9.0/26")}, table.blackholes, cmpPf); diff != "" {
		t.Errorf("blackholes (-want +got):\n%s", diff)
	}
	table.mu.Unlock()
	// The borrowed address is given back, the block released.
	blocks.apply(ipam.Change{Blocks: []ipam.Block{{CIDR: pfx("10.244.1.0/26"), Affinity: "node2"}}})
	blocks.apply(ipam.Change{Deleted: []netip.Prefix{pfx("10.244.0.0/26")}})
	eventually(t, "withdrawn", func() bool { return slices.Equal(advertised(), []netip.Prefix{pfx("10.244.9.0/26")}) })
	fake.mu.Lock()
	if fake.resyncs != 1 {
		t.Errorf("%d resyncs, want only the first", fake.resyncs)
	}
	fake.mu.Unlock()

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

	// stop returns once every goroutine routing started has: the
	// registry's watcher among them.
	r.stop(false)
	stopped = true
	select {
	case reg.nodes <- []mesh.Node{self, other}:
		t.Error("the registry watcher still runs after stop")
	default:
	}
}

// The resync is the safety net: a write the allocator did not make (another
// node's, the garbage collector's) is announced on the next one.
func TestRoutingResyncs(t *testing.T) {
	sp := bgptest.New(bgp.Config{ASN: 64512, RouterID: self.IPv4})
	if err := sp.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	blocks := newOwnBlocks(self.Name)
	fake := &fakeIPAM{blocks: blocks}
	log := slog.New(slog.DiscardHandler)
	r := &routing{self: self, speaker: sp, table: &fakeTable{routes: map[netip.Prefix][]netip.Addr{}}, blocks: blocks, ipam: fake,
		peers: newPeerSet(sp, self, bgp.Peer{}, nil, true, log), resync: 10 * time.Millisecond, log: log}
	r.peers.setNodes(t.Context(), nil)
	r.start(t.Context())
	defer r.stop(false)
	fake.mu.Lock()
	fake.all = []ipam.Block{{CIDR: pfx("10.244.3.0/26"), Affinity: "node1"}, {CIDR: pfx("10.244.4.0/26"), Affinity: "node2"}}
	fake.mu.Unlock()
	eventually(t, "block found by a resync announced", func() bool {
		a := sp.Adverts()
		return len(a) == 1 && a[0].Prefix == pfx("10.244.3.0/26")
	})
}

func TestOwnBlocks(t *testing.T) {
	o := newOwnBlocks("node1")
	mine := ipam.Block{CIDR: pfx("10.0.0.0/26"), Affinity: "node1"}
	lent := ipam.Block{CIDR: pfx("10.0.0.64/26"), Affinity: "node2", Allocations: []ipam.Allocation{{Addr: addr("10.0.0.65"), Attrs: ipam.Attrs{Node: "node1"}}}}
	theirs := ipam.Block{CIDR: pfx("10.0.0.128/26"), Affinity: "node2"}
	o.apply(ipam.Change{Blocks: []ipam.Block{theirs, lent, mine}, Full: true})
	cidrs := func() []netip.Prefix {
		var out []netip.Prefix
		for _, b := range o.list() {
			out = append(out, b.CIDR)
		}
		return out
	}
	if diff := cmp.Diff([]netip.Prefix{mine.CIDR, lent.CIDR}, cidrs(), cmpPf); diff != "" {
		t.Errorf("after a full list (-want +got):\n%s", diff)
	}
	lent.Allocations = nil // the borrowed address went back
	o.apply(ipam.Change{Blocks: []ipam.Block{lent}})
	o.apply(ipam.Change{Deleted: []netip.Prefix{mine.CIDR}})
	if got := cidrs(); len(got) != 0 {
		t.Errorf("after release and delete: %v, want none", got)
	}
	o.apply(ipam.Change{Blocks: []ipam.Block{mine}})
	o.apply(ipam.Change{Full: true})
	if got := cidrs(); len(got) != 0 {
		t.Errorf("an empty full list left %v", got)
	}
	select {
	case <-o.changed:
	default:
		t.Error("no wake-up after changes")
	}
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
