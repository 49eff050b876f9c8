package kubegc_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
	"github.com/flatnet-io/flatnet/ipam/kubegc"
)

var pool = ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.9.0.0/24"), BlockSize: 28}

const grace = time.Minute

// world is the cluster as the collector's lookups see it: cached and live
// views that a test changes separately.
type world struct {
	cachedPods, livePods   map[string]*corev1.Pod
	cachedNodes, liveNodes map[string]bool
	liveErr                error
}

func newWorld() *world {
	return &world{cachedPods: map[string]*corev1.Pod{}, livePods: map[string]*corev1.Pod{}, cachedNodes: map[string]bool{}, liveNodes: map[string]bool{}}
}

func (w *world) addPod(ns, name, node string, ips ...string) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{NodeName: node}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	w.cachedPods[ns+"/"+name], w.livePods[ns+"/"+name] = p, p
}

func (w *world) addNode(name string) { w.cachedNodes[name], w.liveNodes[name] = true, true }

func (w *world) lookups() kubegc.Lookups {
	return kubegc.Lookups{
		CachedPod: func(_ context.Context, ns, name string) (*corev1.Pod, error) { return w.cachedPods[ns+"/"+name], nil },
		LivePod: func(_ context.Context, ns, name string) (*corev1.Pod, error) {
			return w.livePods[ns+"/"+name], w.liveErr
		},
		CachedNode: func(_ context.Context, name string) (bool, error) { return w.cachedNodes[name], nil },
		LiveNode:   func(_ context.Context, name string) (bool, error) { return w.liveNodes[name], w.liveErr },
	}
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time             { return c.now }
func (c *clock) advance(d time.Duration)    { c.now = c.now.Add(d) }
func newClock() *clock                      { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func handles(as []ipam.Allocation) []string { return sortedHandles(as) }

func sortedHandles(as []ipam.Allocation) []string {
	var hs []string
	for _, a := range as {
		hs = append(hs, a.Handle)
	}
	slices.Sort(hs)
	return slices.Compact(hs)
}

func allocator(t *testing.T, s ipam.Store, node string, clk *clock) *ipam.Allocator {
	t.Helper()
	a, err := ipam.New(s, ipam.Config{Node: node, Pools: []ipam.Pool{pool}, Now: clk.Now, ReleaseGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func allocate(t *testing.T, a *ipam.Allocator, handle, ns, pod string) netip.Addr {
	t.Helper()
	got, err := a.Allocate(context.Background(), ipam.Request{Handle: handle, Attrs: ipam.Attrs{Namespace: ns, Pod: pod}})
	if err != nil {
		t.Fatal(err)
	}
	return got[0].Addr
}

func held(t *testing.T, s ipam.Store) []string {
	t.Helper()
	blocks, err := s.ListBlocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var all []ipam.Allocation
	for _, b := range blocks {
		all = append(all, b.Allocations...)
	}
	return sortedHandles(all)
}

func TestPodsGoneAreReleasedAfterGrace(t *testing.T) {
	ctx := context.Background()
	s, clk, w := ipamtest.NewMemStore(), newClock(), newWorld()
	a := allocator(t, s, "n1", clk)
	w.addNode("n1")
	live := allocate(t, a, "live/eth0", "default", "live")
	w.addPod("default", "live", "n1", live.String())
	allocate(t, a, "gone/eth0", "default", "gone")
	allocate(t, a, "replaced/eth0", "default", "web-0") // web-0 now runs with another address
	w.addPod("default", "web-0", "n1", "10.9.9.9")
	allocate(t, a, "moved/eth0", "default", "moved") // a pod of that name runs on n2 now
	w.addPod("default", "moved", "n2")
	allocate(t, a, "done/eth0", "default", "done")
	w.addPod("default", "done", "n1")
	w.cachedPods["default/done"].Status.Phase = corev1.PodSucceeded
	allocate(t, a, "young/eth0", "default", "young") // the informer has not seen it yet
	w.livePods["default/young"] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "young"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "nopod/eth0"}); err != nil { // no pod named: never collected
		t.Fatal(err)
	}

	c, err := kubegc.New(s, a, w.lookups(), kubegc.Config{Grace: grace, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Collect(ctx)
	if err != nil || len(res.Released) > 0 {
		t.Fatalf("first pass released %v (%v): nothing may go before the grace period", handles(res.Released), err)
	}
	clk.advance(grace - time.Second)
	if res, _ := c.Collect(ctx); len(res.Released) > 0 {
		t.Fatalf("released %v before the grace period", handles(res.Released))
	}
	clk.advance(time.Second)
	res, err = c.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"done/eth0", "gone/eth0", "moved/eth0", "replaced/eth0"}
	if got := handles(res.Released); !slices.Equal(got, want) {
		t.Errorf("released %v, want %v", got, want)
	}
	if got, want := held(t, s), []string{"live/eth0", "nopod/eth0", "young/eth0"}; !slices.Equal(got, want) {
		t.Errorf("store holds %v, want %v", got, want)
	}
}

// A pod that reappears restarts its grace period; an error of the live check
// releases nothing.
func TestPodBackOrUnsureIsKept(t *testing.T) {
	ctx := context.Background()
	s, clk, w := ipamtest.NewMemStore(), newClock(), newWorld()
	a := allocator(t, s, "n1", clk)
	allocate(t, a, "blink/eth0", "default", "blink")
	allocate(t, a, "unsure/eth0", "default", "unsure")
	c, _ := kubegc.New(s, a, w.lookups(), kubegc.Config{Grace: grace, Now: clk.Now})
	if _, err := c.Collect(ctx); err != nil { // both seen missing
		t.Fatal(err)
	}
	w.addPod("default", "blink", "n1")
	w.liveErr = errors.New("API server unreachable")
	clk.advance(grace)
	res, err := c.Collect(ctx) // blink is back: forgotten; unsure's live check fails
	if err == nil || len(res.Released) > 0 {
		t.Fatalf("released %v (err %v), want nothing and an error", handles(res.Released), err)
	}
	delete(w.cachedPods, "default/blink")
	delete(w.livePods, "default/blink")
	w.liveErr = nil
	res, _ = c.Collect(ctx)
	if got := handles(res.Released); !slices.Equal(got, []string{"unsure/eth0"}) {
		t.Errorf("released %v, want only unsure/eth0 (blink's grace restarted)", got)
	}
	clk.advance(grace)
	res, _ = c.Collect(ctx)
	if got := handles(res.Released); !slices.Equal(got, []string{"blink/eth0"}) {
		t.Errorf("released %v, want blink/eth0", got)
	}
}

func TestDeadNodesBlocksAreReclaimed(t *testing.T) {
	ctx := context.Background()
	s, clk, w := ipamtest.NewMemStore(), newClock(), newWorld()
	w.addNode("n1")
	w.addNode("dead")
	w.addNode("dead2")
	self, dead, dead2 := allocator(t, s, "n1", clk), allocator(t, s, "dead", clk), allocator(t, s, "dead2", clk)
	allocate(t, self, "mine/eth0", "", "")
	d1 := allocate(t, dead, "d1/eth0", "", "")
	allocate(t, dead2, "e1/eth0", "", "")
	// n1 borrows from dead's block, as it would with the pool exhausted.
	blocks, _ := s.ListBlocks(ctx)
	for _, b := range blocks {
		if b.Affinity == "dead" {
			b.Allocations = append(b.Allocations, ipam.Allocation{Addr: d1.Next(), Handle: "borrowed/eth0", Attrs: ipam.Attrs{Node: "n1"}})
			if _, err := s.UpdateBlock(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	delete(w.cachedNodes, "dead")
	delete(w.cachedNodes, "dead2")
	delete(w.liveNodes, "dead2")
	// dead is gone from the informer but not (yet) from the API server.

	c, _ := kubegc.New(s, self, w.lookups(), kubegc.Config{Grace: grace, Now: clk.Now})
	if _, err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	clk.advance(grace)
	res, err := c.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reclaimed) != 1 || len(res.Orphaned) != 0 {
		t.Fatalf("reclaimed %v orphaned %v; want dead2's block only (dead still exists live)", res.Reclaimed, res.Orphaned)
	}
	// The live check found dead: its grace starts again.
	delete(w.liveNodes, "dead")
	if _, err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	clk.advance(grace)
	if res, err = c.Collect(ctx); err != nil || len(res.Orphaned) != 1 {
		t.Fatalf("orphaned %v (%v), want dead's block", res.Orphaned, err)
	}
	if got, want := held(t, s), []string{"borrowed/eth0", "mine/eth0"}; !slices.Equal(got, want) {
		t.Errorf("store holds %v, want %v", got, want)
	}
	// Once the borrower lets go, the ownerless empty block goes too.
	if _, err := self.Release(ctx, "borrowed/eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	clk.advance(grace)
	if _, err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	blocks, _ = s.ListBlocks(ctx)
	if len(blocks) != 1 || blocks[0].Affinity != "n1" {
		t.Errorf("blocks left: %+v, want n1's only", blocks)
	}
}

func TestHolds(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}
	pod := func(node string, phase corev1.PodPhase, ips ...string) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"no pod", nil, false},
		{"terminating: its sandbox still runs", func() *corev1.Pod {
			p := pod("n1", corev1.PodRunning, "10.0.0.5")
			p.DeletionTimestamp = &metav1.Time{}
			return p
		}(), true},
		{"running here", pod("n1", corev1.PodRunning, "10.0.0.5"), true},
		{"v6 matches", pod("n1", corev1.PodRunning, "10.0.0.7", "fd00::5"), true},
		{"no address yet", pod("n1", corev1.PodPending), true},
		{"not scheduled yet", pod("", corev1.PodPending), true},
		{"other address", pod("n1", corev1.PodRunning, "10.0.0.7"), false},
		{"other node", pod("n2", corev1.PodRunning, "10.0.0.5"), false},
		{"succeeded", pod("n1", corev1.PodSucceeded, "10.0.0.5"), false},
		{"failed", pod("n1", corev1.PodFailed), false},
	} {
		if got := kubegc.Holds(tc.pod, "n1", addrs); got != tc.want {
			t.Errorf("%s: Holds = %v, want %v", tc.name, got, tc.want)
		}
	}
}
