package filestore_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
	"github.com/flatnet-io/flatnet/ipam/storetest"
)

var testPool = ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.20.0.0/21"), BlockSize: 26}

// The test binary doubles as the allocating process: started by
// storetest.Spawn, TestMain runs one node's allocations instead of the tests.
func TestMain(m *testing.M) {
	if code, ok := storetest.ChildMain(allocateMany); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// allocateMany is a child's part: n allocations for node on the store in dir.
func allocateMany(dir, node string, n int) error {
	s, err := filestore.Open(dir, filestore.Options{})
	if err != nil {
		return err
	}
	return storetest.AllocateMany(context.Background(), s, testPool, node, n)
}

// checkStore reads the store afresh and checks that it parses, holds no address
// twice, and holds every acknowledged allocation under its handle.
func checkStore(t *testing.T, dir string, children []*storetest.Child) map[netip.Addr]ipam.Allocation {
	t.Helper()
	s := open(t, dir)
	blocks, err := s.ListBlocks(context.Background())
	if err != nil {
		t.Fatalf("store unreadable after the run: %v", err)
	}
	return storetest.CheckHeld(t, testPool, blocks, children, "store")
}

func TestThreeProcessesAllocateConcurrently(t *testing.T) {
	dir := t.TempDir()
	const n = 200
	children := storetest.SpawnNodes(t, dir, 3, n)
	storetest.WaitAll(t, children, n)
	held := checkStore(t, dir, children)
	if len(held) != 3*n {
		t.Errorf("store holds %d allocations, want %d", len(held), 3*n)
	}
	// The pool had room for everyone, so no node needed another's block.
	s := open(t, dir)
	blocks, _ := s.ListBlocks(context.Background())
	storetest.CheckOwnBlocks(t, blocks)
	t.Logf("%d allocations by 3 processes in %d blocks", len(held), len(blocks))
}

// A process killed with SIGKILL at some point of its run (mid-write, holding the
// lock, between two writes) leaves the store consistent, loses nothing it
// acknowledged, and does not stop the others; a restart of it goes on.
func TestKillNineMidRun(t *testing.T) {
	for _, killAfter := range []int{1, 37, 120} {
		t.Run(fmt.Sprintf("after-%d", killAfter), func(t *testing.T) {
			dir := t.TempDir()
			const n = 200
			children := storetest.SpawnNodes(t, dir, 3, n)
			victim := storetest.KillFirstAfter(t, children, killAfter, n)
			held := checkStore(t, dir, children)
			// Only the victim may have stored an allocation it never got to print.
			storetest.CheckOnlyVictimUnacked(t, held, children, victim)
			// The killed node comes back (same name) and allocates on.
			again := storetest.Spawn(t, dir, victim.Node, 20)
			if err := <-again.Done; err != nil || len(again.Acked()) != 20 {
				t.Fatalf("restarted process: %v, %d allocations", err, len(again.Acked()))
			}
			checkStore(t, dir, append(children, again))
			t.Logf("victim acknowledged %d before SIGKILL; store holds %d", len(victim.Acked()), len(held))
		})
	}
}
