package kubestore_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/ipam/storetest"
	"github.com/flatnet-io/flatnet/test/harness"
)

var mpPool = ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.20.0.0/21"), BlockSize: 26}

// childKube is where a child finds the API server: "<url> <ca file> <token>".
func childKube(k *harness.Kube) string {
	return k.URL + " " + k.CAFile + " " + harness.AdminToken
}

// allocateMany is a child's part — the test binary doubling as an agent,
// started by storetest.Spawn: n allocations for node against the API server
// that where (childKube) names.
func allocateMany(where, node string, n int) error {
	f := strings.Fields(where)
	ca, err := os.ReadFile(f[1])
	if err != nil {
		return err
	}
	cfg := &rest.Config{Host: f[0], BearerToken: f[2], TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := kubestore.New(ctx, cfg, kubestore.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	return storetest.AllocateMany(ctx, s, mpPool, node, n)
}

// checkServer reads every block from the API server and checks that no
// address is held twice, every allocation lies in its block, every block is
// a block of the pool with one owner, and every acknowledged allocation is
// there under its handle.
func checkServer(t *testing.T, k *harness.Kube, children []*storetest.Child) (held map[netip.Addr]ipam.Allocation, blocks int) {
	t.Helper()
	objs := listBlocks(t, k.RESTConfig())
	var bs []ipam.Block
	for _, o := range objs {
		b := ipam.Block{CIDR: netip.MustParsePrefix(o.Spec.CIDR), Affinity: o.Spec.Affinity}
		for _, al := range o.Spec.Allocations {
			b.Allocations = append(b.Allocations, ipam.Allocation{Addr: netip.MustParseAddr(al.Address), Handle: al.Handle, Attrs: ipam.Attrs{Node: al.Node}})
		}
		bs = append(bs, b)
	}
	held = storetest.CheckHeld(t, mpPool, bs, children, "server")
	// The pool has room for everyone: nobody needs another's block.
	storetest.CheckOwnBlocks(t, bs)
	return held, len(objs)
}

func TestThreeProcessesAllocateConcurrently(t *testing.T) {
	k := setup(t)
	const n = 100
	start := time.Now()
	children := storetest.SpawnNodes(t, childKube(k), 3, n)
	storetest.WaitAll(t, children, n)
	lost := 0
	for _, c := range children {
		lost += c.Lost
		t.Logf("%s: %d allocations, %d writes lost a race", c.Node, len(c.Acked()), c.Lost)
	}
	held, blocks := checkServer(t, k, children)
	if len(held) != 3*n {
		t.Errorf("server holds %d allocations, want %d", len(held), 3*n)
	}
	t.Logf("%d allocations by 3 processes in %d blocks in %v; %d writes lost a race (%.1f%%)",
		len(held), blocks, time.Since(start).Round(time.Millisecond), lost, 100*float64(lost)/float64(3*n))
}

// A process killed with SIGKILL mid-run (mid-request, between two writes)
// leaves the blocks consistent, loses nothing acknowledged, and does not stop
// the others; a new process for the same node goes on.
func TestKillNineMidRun(t *testing.T) {
	for _, killAfter := range []int{1, 37} {
		t.Run(fmt.Sprintf("after-%d", killAfter), func(t *testing.T) {
			k := setup(t)
			const n = 100
			children := storetest.SpawnNodes(t, childKube(k), 3, n)
			victim := storetest.KillFirstAfter(t, children, killAfter, n)
			held, _ := checkServer(t, k, children)
			storetest.CheckOnlyVictimUnacked(t, held, children, victim)
			again := storetest.Spawn(t, childKube(k), victim.Node, 20)
			if err := <-again.Done; err != nil || len(again.Acked()) != 20 {
				t.Fatalf("restarted %s: %v, %d allocations", victim.Node, err, len(again.Acked()))
			}
			checkServer(t, k, append(children, again))
			t.Logf("victim acknowledged %d before SIGKILL; server holds %d", len(victim.Acked()), len(held))
		})
	}
}
