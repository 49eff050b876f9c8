package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

func pool(t testing.TB, name, cidr string, blockSize int) ipam.Pool {
	t.Helper()
	p, err := ipam.NewPool(name, netip.MustParsePrefix(cidr), blockSize)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// clock is a settable time source.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newAllocator(t testing.TB, s ipam.Store, node string, cfg ipam.Config, pools ...ipam.Pool) *ipam.Allocator {
	t.Helper()
	cfg.Node, cfg.Pools = node, pools
	a, err := ipam.New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func alloc(t testing.TB, a *ipam.Allocator, handle string, fams ...ipam.Family) []netip.Addr {
	t.Helper()
	got, err := a.Allocate(context.Background(), ipam.Request{Handle: handle, Families: fams})
	if err != nil {
		t.Fatalf("Allocate(%s): %v", handle, err)
	}
	return addrs(got)
}

func addrs(als []ipam.Allocation) []netip.Addr {
	out := make([]netip.Addr, len(als))
	for i, al := range als {
		out[i] = al.Addr
	}
	return out
}

func parseAddrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func blockMap(t testing.TB, s ipam.Store) map[string]string {
	t.Helper()
	blocks, err := s.ListBlocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, b := range blocks {
		m[b.CIDR.String()] = b.Affinity
	}
	return m
}

var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestNewPoolRejects(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		bs   int
		want string
	}{
		{"10.0.0.0/24", 19, "outside /20../32"},
		{"10.0.0.0/24", 33, "outside /20../32"},
		{"10.0.0.0/26", 24, "does not fit"},
		{"10.0.0.1/24", 26, "not a network address"},
		{"fd00::/64", 115, "outside /116../128"},
		{"fd00::/120", 122, ""},
	} {
		_, err := ipam.NewPool("p", netip.MustParsePrefix(tc.cidr), tc.bs)
		if tc.want == "" {
			if err != nil {
				t.Errorf("NewPool(%s, %d): %v", tc.cidr, tc.bs, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ipam.ErrInvalid) {
			t.Errorf("NewPool(%s, %d) = %v, want ErrInvalid containing %q", tc.cidr, tc.bs, err, tc.want)
		}
	}
}

func TestNewRejectsOverlappingPools(t *testing.T) {
	_, err := ipam.New(ipamtest.NewMemStore(), ipam.Config{Node: "n1", Pools: []ipam.Pool{
		pool(t, "a", "10.0.0.0/16", 26), pool(t, "b", "10.0.8.0/24", 26),
	}})
	if !errors.Is(err, ipam.ErrInvalid) || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("New with overlapping pools = %v", err)
	}
}

// Pools are checked against each other: not for more than MaxPools of them.
func TestNewRejectsTooManyPools(t *testing.T) {
	pools := make([]ipam.Pool, ipam.MaxPools+1)
	for i := range pools {
		pools[i] = pool(t, fmt.Sprintf("p%d", i), fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), 26)
	}
	_, err := ipam.New(ipamtest.NewMemStore(), ipam.Config{Node: "n1", Pools: pools})
	if !errors.Is(err, ipam.ErrInvalid) || !strings.Contains(err.Error(), "1025 pools, at most 1024") {
		t.Errorf("New with %d pools = %v", len(pools), err)
	}
	if _, err := ipam.New(ipamtest.NewMemStore(), ipam.Config{Node: "n1", Pools: pools[:ipam.MaxPools]}); err != nil {
		t.Errorf("New with %d pools = %v", ipam.MaxPools, err)
	}
}

// Blocks are carved at the pool's edges, including the very end of the address
// space, and the pool gives out every one of its addresses exactly once.
func TestCarvesWholePoolAtEdges(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		bs   int
	}{
		{"10.0.0.0/30", 31},
		{"255.255.255.248/29", 31},
		{"255.255.255.255/32", 32},
		{"0.0.0.0/30", 32},
		{"10.1.0.0/22", 24},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124", 126},
		{"fd00::/120", 122},
	} {
		t.Run(tc.cidr, func(t *testing.T) {
			s := ipamtest.NewMemStore()
			p := pool(t, "p", tc.cidr, tc.bs)
			a := newAllocator(t, s, "n1", ipam.Config{StrictAffinity: true}, p)
			size := 1 << (p.CIDR.Addr().BitLen() - p.CIDR.Bits())
			seen := map[netip.Addr]bool{}
			for i := range size {
				got := alloc(t, a, fmt.Sprintf("h%d", i))
				if len(got) != 1 || !p.CIDR.Contains(got[0]) || seen[got[0]] {
					t.Fatalf("allocation %d = %v: outside %s or repeated", i, got, p.CIDR)
				}
				seen[got[0]] = true
			}
			_, err := a.Allocate(context.Background(), ipam.Request{Handle: "one-too-many"})
			if !errors.Is(err, ipam.ErrExhausted) {
				t.Fatalf("allocation past the end = %v, want ErrExhausted", err)
			}
			if n := len(blockMap(t, s)); n != 1<<p.BlockBits() {
				t.Errorf("%d blocks claimed, want %d", n, 1<<p.BlockBits())
			}
		})
	}
}

func TestAllocatesLowestFreeAndClaimsInOrder(t *testing.T) {
	s := ipamtest.NewMemStore()
	a := newAllocator(t, s, "n1", ipam.Config{}, pool(t, "p", "10.0.0.0/24", 30))
	var got []netip.Addr
	for i := range 6 {
		got = append(got, alloc(t, a, fmt.Sprintf("h%d", i))...)
	}
	want := parseAddrs("10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5")
	if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"10.0.0.0/30": "n1", "10.0.0.4/30": "n1"}, blockMap(t, s)); diff != "" {
		t.Errorf("blocks (-want +got):\n%s", diff)
	}
	if _, err := a.Release(context.Background(), "h1"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(parseAddrs("10.0.0.1"), alloc(t, a, "h6"), cmpAddr); diff != "" {
		t.Errorf("after release (-want +got):\n%s", diff)
	}
}

func TestDualStackIdempotent(t *testing.T) {
	s := ipamtest.NewMemStore()
	a := newAllocator(t, s, "n1", ipam.Config{}, pool(t, "v6", "fd00::/120", 122), pool(t, "v4", "10.0.0.0/24", 26))
	first := alloc(t, a, "c1/eth0")
	want := parseAddrs("10.0.0.0", "fd00::")
	if diff := cmp.Diff(want, first, cmpAddr); diff != "" {
		t.Fatalf("first allocation (-want +got):\n%s", diff)
	}
	writes := s.Writes
	if diff := cmp.Diff(want, alloc(t, a, "c1/eth0"), cmpAddr); diff != "" {
		t.Errorf("same handle again (-want +got):\n%s", diff)
	}
	if s.Writes != writes {
		t.Errorf("repeating an allocation wrote %d times", s.Writes-writes)
	}
	if diff := cmp.Diff(parseAddrs("fd00::1"), alloc(t, a, "c2/eth0", ipam.IPv6), cmpAddr); diff != "" {
		t.Errorf("IPv6 only (-want +got):\n%s", diff)
	}
}

// One write per allocation in the common case, claims included.
func TestOneWritePerAllocation(t *testing.T) {
	s := ipamtest.NewMemStore()
	a := newAllocator(t, s, "n1", ipam.Config{}, pool(t, "p", "10.0.0.0/24", 28))
	for i := range 40 {
		alloc(t, a, fmt.Sprintf("h%d", i))
	}
	if s.Writes != 40 {
		t.Errorf("40 allocations took %d writes", s.Writes)
	}
}

func TestStrictAffinityVersusBorrowing(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			s := ipamtest.NewMemStore()
			p := pool(t, "small", "10.0.0.0/29", 30) // two blocks of four
			cfg := ipam.Config{StrictAffinity: strict}
			n1 := newAllocator(t, s, "n1", cfg, p)
			n2 := newAllocator(t, s, "n2", cfg, p)
			alloc(t, n1, "a1") // n1 claims 10.0.0.0/30
			for i := range 4 {
				alloc(t, n2, fmt.Sprintf("b%d", i)) // n2 claims and fills 10.0.0.4/30
			}
			got, err := n2.Allocate(context.Background(), ipam.Request{Handle: "b4"})
			if strict {
				if !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(err.Error(), "small (10.0.0.0/29)") || !strings.Contains(err.Error(), "strictAffinity") {
					t.Fatalf("strict: Allocate = %v, %v; want a pool exhausted error naming the pool", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("borrow: %v", err)
			}
			if diff := cmp.Diff(parseAddrs("10.0.0.1"), addrs(got), cmpAddr); diff != "" {
				t.Errorf("borrowed address (-want +got):\n%s", diff)
			}
			if got[0].Attrs.Node != "n2" {
				t.Errorf("borrowed allocation attributed to %q, want n2", got[0].Attrs.Node)
			}
			if diff := cmp.Diff(map[string]string{"10.0.0.0/30": "n1", "10.0.0.4/30": "n2"}, blockMap(t, s)); diff != "" {
				t.Errorf("borrowing changed affinities (-want +got):\n%s", diff)
			}
		})
	}
}

// When the second family cannot be served, the first family's address is given
// back: a failed request holds nothing.
func TestFailedRequestHoldsNothing(t *testing.T) {
	s := ipamtest.NewMemStore()
	a := newAllocator(t, s, "n1", ipam.Config{StrictAffinity: true}, pool(t, "v4", "10.0.0.0/24", 26), pool(t, "v6", "fd00::/128", 128))
	alloc(t, a, "holder", ipam.IPv6) // takes the only IPv6 address
	_, err := a.Allocate(context.Background(), ipam.Request{Handle: "c2/eth0"})
	if !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("Allocate = %v, want ErrExhausted", err)
	}
	blocks, _ := s.ListBlocks(context.Background())
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Handle == "c2/eth0" {
				t.Errorf("failed request still holds %s", al.Addr)
			}
		}
	}
	// An earlier allocation of the same handle is not rolled back by a later failure.
	alloc(t, a, "keep", ipam.IPv4)
	if _, err := a.Allocate(context.Background(), ipam.Request{Handle: "keep"}); !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("Allocate = %v", err)
	}
	if got := alloc(t, a, "keep", ipam.IPv4); !got[0].Is4() {
		t.Errorf("keep lost its address: %v", got)
	}
}

func TestReleaseAndIdleBlocks(t *testing.T) {
	ctx := context.Background()
	s := ipamtest.NewMemStore()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := newAllocator(t, s, "n1", ipam.Config{ReleaseGrace: time.Minute, Now: clk.Now}, pool(t, "p", "10.0.0.0/24", 30))
	alloc(t, a, "h1")
	if gone, err := a.Release(ctx, "never-allocated"); err != nil || len(gone) != 0 {
		t.Errorf("Release(unknown) = %v, %v; want nothing, nil", gone, err)
	}
	gone, err := a.Release(ctx, "h1")
	if err != nil || len(gone) != 1 {
		t.Fatalf("Release(h1) = %v, %v", gone, err)
	}
	b, _ := s.GetBlock(ctx, netip.MustParsePrefix("10.0.0.0/30"))
	if !b.EmptySince.Equal(clk.now) {
		t.Errorf("emptied block: EmptySince %v, want %v", b.EmptySince, clk.now)
	}
	clk.now = clk.now.Add(59 * time.Second)
	if rel, _ := a.ReleaseIdleBlocks(ctx); len(rel) != 0 {
		t.Errorf("released %v inside the grace period", rel)
	}
	clk.now = clk.now.Add(2 * time.Second)
	rel, err := a.ReleaseIdleBlocks(ctx)
	if err != nil || len(rel) != 1 {
		t.Errorf("ReleaseIdleBlocks after grace = %v, %v; want the block", rel, err)
	}
	if len(blockMap(t, s)) != 0 {
		t.Errorf("blocks left: %v", blockMap(t, s))
	}

	// A block that is used again before the grace runs out stays.
	alloc(t, a, "h2")
	if _, err := a.Release(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	alloc(t, a, "h3")
	clk.now = clk.now.Add(time.Hour)
	if rel, _ := a.ReleaseIdleBlocks(ctx); len(rel) != 0 {
		t.Errorf("released a block in use: %v", rel)
	}
}

func TestZeroGraceReleasesAtOnce(t *testing.T) {
	s := ipamtest.NewMemStore()
	a := newAllocator(t, s, "n1", ipam.Config{}, pool(t, "p", "10.0.0.0/24", 30))
	alloc(t, a, "h1")
	if _, err := a.Release(context.Background(), "h1"); err != nil {
		t.Fatal(err)
	}
	if len(blockMap(t, s)) != 0 {
		t.Errorf("empty block kept with no grace: %v", blockMap(t, s))
	}
}

func TestGCReleasesOnlyThisNodesStaleHandles(t *testing.T) {
	ctx := context.Background()
	s := ipamtest.NewMemStore()
	p := pool(t, "p", "10.0.0.0/24", 26)
	n1 := newAllocator(t, s, "n1", ipam.Config{}, p)
	n2 := newAllocator(t, s, "n2", ipam.Config{}, p)
	for _, h := range []string{"a", "b", "c"} {
		alloc(t, n1, h)
	}
	alloc(t, n2, "d")
	gone, err := n1.GC(ctx, []string{"b"})
	if err != nil {
		t.Fatal(err)
	}
	var handles []string
	for _, al := range gone {
		handles = append(handles, al.Handle)
	}
	slices.Sort(handles)
	if diff := cmp.Diff([]string{"a", "c"}, handles); diff != "" {
		t.Errorf("GC released (-want +got):\n%s", diff)
	}
	if got := alloc(t, n1, "b"); got[0] != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("b moved to %v", got)
	}
	if got := alloc(t, n2, "d"); got[0] != netip.MustParseAddr("10.0.0.64") {
		t.Errorf("n2's d moved to %v", got)
	}
}

// A handle is a node's: another node that names it gets an allocation of
// its own, and releasing it there leaves the first node's pod alone.
func TestHandlesAreScopedToTheirNode(t *testing.T) {
	ctx := context.Background()
	s := ipamtest.NewMemStore()
	p := pool(t, "p", "10.0.0.0/24", 26)
	n1 := newAllocator(t, s, "n1", ipam.Config{}, p)
	n2 := newAllocator(t, s, "n2", ipam.Config{}, p)
	a1 := alloc(t, n1, "c1/eth0")
	if a2 := alloc(t, n2, "c1/eth0"); a2[0] == a1[0] {
		t.Errorf("n2 was handed n1's %v for the same handle", a1[0])
	}
	gone, err := n2.Release(ctx, "c1/eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range gone {
		if al.Attrs.Node != "n2" {
			t.Errorf("n2's Release gave back %s's %v", al.Attrs.Node, al.Addr)
		}
	}
	if got := alloc(t, n1, "c1/eth0"); got[0] != a1[0] {
		t.Errorf("n1's c1/eth0 is %v now, was %v", got[0], a1[0])
	}
	if gone, err := n2.Release(ctx, "c1/eth0"); err != nil || len(gone) != 0 {
		t.Errorf("n2 released %v, %v of a handle it no longer holds", gone, err)
	}
	if gone, err := n1.Release(ctx, "c1/eth0"); err != nil || len(gone) != 1 || gone[0].Addr != a1[0] {
		t.Errorf("n1's Release = %v, %v; want %v", gone, err, a1[0])
	}
}

func TestRejectsMalformedRequests(t *testing.T) {
	a := newAllocator(t, ipamtest.NewMemStore(), "n1", ipam.Config{}, pool(t, "p", "10.0.0.0/24", 26))
	for name, req := range map[string]ipam.Request{
		"empty handle":      {},
		"space in handle":   {Handle: "a b"},
		"control in handle": {Handle: "a\x00b"},
		"long handle":       {Handle: strings.Repeat("x", 513)},
		"unknown family":    {Handle: "h", Families: []ipam.Family{5}},
		"family twice":      {Handle: "h", Families: []ipam.Family{ipam.IPv4, ipam.IPv4}},
		"no pool of family": {Handle: "h", Families: []ipam.Family{ipam.IPv6}},
		// Kubernetes' own limits: a namespace is a DNS label, a pod name a subdomain.
		"long namespace": {Handle: "h", Attrs: ipam.Attrs{Namespace: strings.Repeat("n", 64), Pod: "p"}},
		"long pod name":  {Handle: "h", Attrs: ipam.Attrs{Namespace: "ns", Pod: strings.Repeat("p", 254)}},
		"1 MiB pod name": {Handle: "h", Attrs: ipam.Attrs{Namespace: "ns", Pod: strings.Repeat("p", 1<<20)}},
	} {
		if _, err := a.Allocate(context.Background(), req); !errors.Is(err, ipam.ErrInvalid) {
			t.Errorf("%s: Allocate = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := a.Release(context.Background(), ""); !errors.Is(err, ipam.ErrInvalid) {
		t.Errorf("Release(\"\") = %v, want ErrInvalid", err)
	}
	if blocks, _ := a.Blocks(context.Background()); len(blocks) != 0 {
		t.Errorf("malformed requests claimed %v", blocks)
	}
	// At the limits, a request is served.
	if _, err := a.Allocate(context.Background(), ipam.Request{Handle: "h", Attrs: ipam.Attrs{Namespace: strings.Repeat("n", 63), Pod: strings.Repeat("p", 253)}}); err != nil {
		t.Errorf("Allocate with a 63-byte namespace and a 253-byte pod name: %v", err)
	}
}

// Three nodes allocating at once on one store never hand out an address twice,
// and every block belongs to exactly one of them.
func TestConcurrentNodes(t *testing.T) {
	s := ipamtest.NewMemStore()
	p := pool(t, "p", "10.0.0.0/22", 28)
	var mu sync.Mutex
	owner := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for n := range 3 {
		a := newAllocator(t, s, fmt.Sprintf("n%d", n), ipam.Config{}, p)
		for i := range 100 {
			wg.Go(func() {
				h := fmt.Sprintf("n%d-h%d", n, i)
				got, err := a.Allocate(context.Background(), ipam.Request{Handle: h})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if prev, dup := owner[got[0].Addr]; dup {
					t.Errorf("%s handed to both %s and %s", got[0].Addr, prev, h)
				}
				owner[got[0].Addr] = h
			})
		}
	}
	wg.Wait()
	if len(owner) != 300 {
		t.Errorf("%d distinct addresses, want 300", len(owner))
	}
	blocks, _ := s.ListBlocks(context.Background())
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Attrs.Node != b.Affinity {
				t.Errorf("block %s of %s holds %s's %s though the pool had room", b.CIDR, b.Affinity, al.Attrs.Node, al.Addr)
			}
		}
	}
}
