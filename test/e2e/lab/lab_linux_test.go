package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/kube/v1alpha1"
	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/netns"
)

// TestPrivilegedLab runs every topology through the life of a cluster: up
// with two pods a node and the network model verified; a pod deleted; a block
// filled so its node claims another; an agent restarted under traffic; a node
// stopped; the lab torn down. The steps share one lab per topology and run in
// order; topologies run side by side (go test -parallel).
func TestPrivilegedLab(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.label(), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			e := up(t, topo, editConfig)
			e.addPods(t, 2)
			took := e.waitVerify(t, time.Minute)
			t.Logf("up, %d pods, every verify check passed: %v after up began (verify waited %v)",
				2*len(e.flatnetNodes()), time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond))

			type step struct {
				name string
				fn   func(*testing.T, *env)
			}
			var steps []step
			if topo.datastore == lab.DatastoreKubernetes {
				steps = append(steps, step{"kubernetes-objects", testKubeObjects})
			}
			steps = append(steps, []step{
				{"delete-pod", testDeletePod},
				{"second-block", testSecondBlock},
				{"restart-agent", testRestartAgent},
				{"stop-node", testStopNode},
				{"teardown", testTeardown},
			}...)
			for _, s := range steps {
				t.Run(s.name, func(t *testing.T) { s.fn(t, e) })
			}
		})
	}
}

// testKubeObjects checks, with the kubernetes datastore, that what the
// agents hold is in the lab's API server: every node's blocks as IPAMBlock
// objects with its affinity, every pod's addresses in them with the pod's
// namespace and name, of a Pod object bound to that node; and that every node
// peers with each of the others, which it found in their Node objects.
func testKubeObjects(t *testing.T, e *env) {
	k := e.Kube()
	out, err := k.Kubectl("get", "ipamblocks", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var blocks v1alpha1.IPAMBlockList
	if err := json.Unmarshal([]byte(out), &blocks); err != nil {
		t.Fatal(err)
	}
	objects := map[string][]netip.Prefix{}
	owner := map[netip.Addr]v1alpha1.IPAMAllocation{}
	for _, b := range blocks.Items {
		objects[b.Spec.Affinity] = append(objects[b.Spec.Affinity], netip.MustParsePrefix(b.Spec.CIDR))
		for _, a := range b.Spec.Allocations {
			owner[netip.MustParseAddr(a.Address)] = a
		}
	}
	for _, node := range e.flatnetNodes() {
		held := e.blocksOf(t, node, node)
		slices.SortFunc(held, netip.Prefix.Compare)
		slices.SortFunc(objects[node], netip.Prefix.Compare)
		if !slices.Equal(held, objects[node]) {
			t.Errorf("%s holds blocks %v, its IPAMBlock objects say %v", node, held, objects[node])
		}
		for _, p := range e.podsOn(t, node) {
			name := lab.KubePodName(node, p.Name)
			for _, a := range p.Addrs {
				al, ok := owner[a]
				if !ok || al.Node != node || al.Namespace != lab.PodNamespace || al.Pod != name {
					t.Errorf("pod %s/%s's address %s: allocation in the API %+v, want node %s, pod %s/%s", node, p.Name, a, al, node, lab.PodNamespace, name)
				}
			}
			if got, err := k.Kubectl("get", "pod", name, "-n", lab.PodNamespace, "-o", "jsonpath={.spec.nodeName}"); err != nil || got != node {
				t.Errorf("Pod object %s/%s: node %q, err %v; want %s", lab.PodNamespace, name, got, err, node)
			}
		}
		st, err := e.status(t.Context(), node)
		if err != nil {
			t.Fatal(err)
		}
		var mesh []string
		for _, p := range st.GetPeers() {
			if p.GetMesh() {
				mesh = append(mesh, strings.TrimPrefix(p.GetName(), "mesh-"))
			}
		}
		slices.Sort(mesh)
		if want := e.others(node); !slices.Equal(mesh, want) {
			t.Errorf("%s peers with %v in the mesh, want %v (from the Node objects)", node, mesh, want)
		}
	}
	t.Logf("%d IPAMBlock objects, %d allocations; blocks and pods as the agents hold them", len(blocks.Items), len(owner))
}

// testDeletePod deletes a pod on node1: its host route goes, its addresses
// return to the pool, and a new pod (which may reuse them) is reachable.
func testDeletePod(t *testing.T, e *env) {
	pods := e.podsOn(t, "node1")
	if len(pods) < 2 {
		t.Fatalf("node1 has %d pods, want at least 2", len(pods))
	}
	victim := pods[len(pods)-1]
	before := e.allocated(t, "node1")
	for _, a := range victim.Addrs {
		if before[a] == "" {
			t.Fatalf("pod %s's address %s is not allocated in IPAM: %v", victim.Name, a, before)
		}
	}
	if err := e.DelPod(t.Context(), "node1", victim.Name); err != nil {
		t.Fatal(err)
	}
	have, err := e.kernelPrefixes(e.NS("node1"))
	if err != nil {
		t.Fatal(err)
	}
	after := e.allocated(t, "node1")
	for _, a := range victim.Addrs {
		if have[netip.PrefixFrom(a, a.BitLen())] {
			t.Errorf("node1 still routes %s/%d to the deleted pod", a, a.BitLen())
		}
		if h, ok := after[a]; ok {
			t.Errorf("%s still allocated after the pod was deleted (handle %s)", a, h)
		}
	}
	if len(after) != len(before)-len(victim.Addrs) {
		t.Errorf("node1 holds %d addresses after the delete, want %d", len(after), len(before)-len(victim.Addrs))
	}

	p, err := e.AddPod(t.Context(), "node1", "pod-new")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted %s %v; new pod got %v (an address reused: %v)", victim.Name, victim.Addrs, p.Addrs,
		slices.ContainsFunc(p.Addrs, func(a netip.Addr) bool { return slices.Contains(victim.Addrs, a) }))
	from := e.podsOn(t, e.others("node1")[0])[0]
	for _, a := range p.Addrs {
		eventually(t, 30*time.Second, fmt.Sprintf("%s reaches the new pod at %s", from.NS, a), func() (bool, string) {
			err := e.ping(from.NS, a)
			return err == nil, fmt.Sprint(err)
		})
	}
}

// testSecondBlock adds pods to node1 until it claims a second block (of
// each pool), then checks that the new blocks are announced to every other
// node and every router, and that the pod in them is reachable from pods on
// the other nodes and from the routers.
func testSecondBlock(t *testing.T, e *env) {
	held := e.blocksOf(t, "node1", "node1")
	inHeld := func(a netip.Addr) bool {
		return slices.ContainsFunc(held, func(b netip.Prefix) bool { return b.Contains(a) })
	}
	var fresh *lab.Pod
	for i := 1; fresh == nil; i++ {
		if i > 40 {
			t.Fatalf("40 pods added to node1 and no new block claimed; blocks %v", e.blocksOf(t, "node1", "node1"))
		}
		p, err := e.AddPod(t.Context(), "node1", fmt.Sprintf("fill%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(p.Addrs, inHeld) {
			fresh = p
		}
	}
	var claimed []netip.Prefix
	for _, b := range e.blocksOf(t, "node1", "node1") {
		if !slices.Contains(held, b) {
			claimed = append(claimed, b)
		}
	}
	if len(claimed) == 0 {
		t.Fatalf("pod %s got %v outside node1's blocks %v, but node1 claimed no new block", fresh.Name, fresh.Addrs, held)
	}
	t.Logf("pod %s (%v) made node1 claim %v (it held %v)", fresh.Name, fresh.Addrs, claimed, held)

	observers := append(e.nsOf(e.others("node1")), e.nsOf(e.routers())...)
	for _, ns := range observers {
		eventually(t, 30*time.Second, ns+" routes node1's new blocks", func() (bool, string) {
			miss, err := e.missing(ns, claimed)
			return err == nil && len(miss) == 0, fmt.Sprintf("missing %v (err %v)", miss, err)
		})
	}
	var from []string
	for _, n := range e.others("node1") {
		from = append(from, e.podsOn(t, n)[0].NS)
	}
	for _, r := range e.routers() {
		from = append(from, e.NS(r))
	}
	for _, ns := range from {
		for _, a := range fresh.Addrs {
			if a.Is6() && slices.Contains(e.routers(), strings.TrimPrefix(ns, e.NSPrefix())) {
				continue // the routers carry IPv4 only
			}
			eventually(t, 30*time.Second, fmt.Sprintf("%s reaches %s", ns, a), func() (bool, string) {
				err := e.ping(ns, a)
				return err == nil, fmt.Sprint(err)
			})
		}
	}
}

func (e *env) nsOf(nodes []string) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, e.NS(n))
	}
	return out
}

// testRestartAgent restarts node1's agent (SIGTERM: a planned restart, so
// graceful restart keeps its routes at its peers) while a pod on node2 pings
// a pod on node1 every 10 ms. It asserts that node1's blocks stayed routed in
// node2's and every router's kernel throughout, and reports the loss.
func testRestartAgent(t *testing.T, e *env) {
	src := e.podsOn(t, "node2")[0]
	dst := e.podsOn(t, "node1")[0]
	blocks := e.blocksOf(t, "node1", "node1")
	eventually(t, time.Minute, "node1's sessions established and its routes converged before the restart", func() (bool, string) {
		return e.settled(t.Context(), "node1")
	})
	observers := append(e.nsOf([]string{"node2"}), e.nsOf(e.routers())...)

	// Watch the observers' kernels from before the restart until after it.
	stopWatch := make(chan struct{})
	var mu sync.Mutex
	var gaps []string
	polls := 0
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			for _, ns := range observers {
				miss, err := e.missing(ns, blocks)
				mu.Lock()
				if err != nil || len(miss) > 0 {
					gaps = append(gaps, fmt.Sprintf("%s %s: missing %v (err %v)", time.Now().Format("15:04:05.000"), ns, miss, err))
				}
				mu.Unlock()
			}
			polls++
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	ping, err := startPing(src.NS, dst.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // traffic before
	start := time.Now()
	if err := e.RestartAgent(t.Context(), "node1", false); err != nil {
		close(stopWatch)
		<-watched
		_, _, _ = ping.stop()
		t.Fatal(err)
	}
	back := time.Since(start)
	var detail string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, detail = e.settled(t.Context(), "node1"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("node1's agent not settled a minute after its restart: %s", detail)
			break
		}
	}
	settled := time.Since(start)
	time.Sleep(time.Second) // traffic after
	close(stopWatch)
	<-watched
	sent, received, err := ping.stop()
	if err != nil {
		t.Error(err)
	}
	lossPct := 0.0
	if sent > 0 {
		lossPct = 100 * float64(sent-received) / float64(sent)
	}
	t.Logf("restart of node1's agent: API back after %v, sessions up and converged after %v; ping %s -> %s every 10 ms: %d sent, %d received, %d lost (%.1f%%, target 0)",
		back.Round(time.Millisecond), settled.Round(time.Millisecond), src.Addrs[0], dst.Addrs[0], sent, received, sent-received, lossPct)
	if len(gaps) > 0 {
		t.Errorf("node1's blocks %v left a kernel during its agent's graceful restart (%d of %d polls):\n%s",
			blocks, len(gaps), polls*len(observers), strings.Join(gaps[:min(len(gaps), 20)], "\n"))
	} else {
		t.Logf("node1's blocks %v stayed in the kernels of %v through the restart (%d polls each)", blocks, observers, polls)
	}
}

// testStopNode stops node1 (its traffic dropped, its processes killed, as a
// machine that loses power) and waits for its routes to leave every other
// node and every router: within the sessions' hold time, plus a margin for
// polling and propagation. It keeps watching past that (up to the graceful
// restart time more) only to report how long it did take.
func testStopNode(t *testing.T, e *env) {
	blocks := e.blocksOf(t, "node2", "node1")
	observers := append(e.nsOf(e.others("node1")), e.nsOf(e.routers())...)
	const margin = 5 * time.Second
	// Every speaker, flatnet's included, drops the routes when its hold
	// timer expires: a session that ends that way is not a restart.
	limit := e.topo.holdTime + margin
	start := time.Now()
	if err := e.StopNode("node1"); err != nil {
		t.Fatal(err)
	}
	gone := map[string]time.Duration{}
	for deadline := start.Add(limit + e.topo.restartTime); len(gone) < len(observers) && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, ns := range observers {
			if _, ok := gone[ns]; ok {
				continue
			}
			have, err := e.kernelPrefixes(ns)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(blocks, func(b netip.Prefix) bool { return have[b] }) {
				gone[ns] = time.Since(start)
			}
		}
	}
	for _, ns := range observers {
		took, ok := gone[ns]
		switch {
		case !ok:
			t.Errorf("%s: node1's blocks %v still routed %v after node1 stopped (hold time %v)", ns, blocks, time.Since(start).Round(time.Second), e.topo.holdTime)
		case took > limit:
			t.Errorf("%s: node1's blocks left after %v, later than the hold time %v + %v", ns, took.Round(time.Millisecond), e.topo.holdTime, margin)
		default:
			t.Logf("%s: node1's blocks %v left %v after node1 stopped (hold time %v)", ns, blocks, took.Round(time.Millisecond), e.topo.holdTime)
		}
	}
}

// testTeardown takes the lab down and shows that nothing is left: no
// namespace with the lab's prefix (their links went with them: every link of
// the lab has an end in one), no process that ran in one, no state directory,
// no FRR run directory.
func testTeardown(t *testing.T, e *env) {
	nss := e.Namespaces()
	if len(nss) == 0 {
		t.Fatal("the lab has no namespaces before teardown")
	}
	var pids []int
	for _, ns := range nss {
		pids = append(pids, netns.Pids(ns)...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.Down(); err != nil {
		t.Fatal(err)
	}
	t.Logf("down: %d namespaces and %d processes removed", len(nss), len(pids))
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range entries {
		if strings.HasPrefix(ns.Name(), e.NSPrefix()) {
			t.Errorf("namespace left: %s", ns.Name())
		}
	}
	for _, pid := range pids {
		for netns.ProcessAlive(pid) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if netns.ProcessAlive(pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("process %d still runs: %s", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	if _, err := os.Stat(e.StateDir); !os.IsNotExist(err) {
		t.Errorf("state directory %s left (stat: %v)", e.StateDir, err)
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/var/run/frr", ns)); !os.IsNotExist(err) {
			t.Errorf("FRR run directory /var/run/frr/%s left", ns)
		}
	}
}
