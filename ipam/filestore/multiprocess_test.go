package filestore_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
)

// The test binary doubles as the allocating process: with these variables set,
// TestMain runs one node's allocations instead of the tests.
const (
	envChildDir   = "FLATNET_TEST_CHILD_DIR"
	envChildNode  = "FLATNET_TEST_CHILD_NODE"
	envChildCount = "FLATNET_TEST_CHILD_COUNT"
)

var testPool = ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.20.0.0/21"), BlockSize: 26}

func TestMain(m *testing.M) {
	if dir := os.Getenv(envChildDir); dir != "" {
		n, _ := strconv.Atoi(os.Getenv(envChildCount))
		if err := allocateMany(dir, os.Getenv(envChildNode), n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// allocateMany makes n concurrent allocations for node and prints "handle addr"
// for each one once Allocate has returned: a printed line is an acknowledged
// allocation that must never be lost.
func allocateMany(dir, node string, n int) error {
	s, err := filestore.Open(dir, filestore.Options{})
	if err != nil {
		return err
	}
	a, err := ipam.New(s, ipam.Config{Node: node, Pools: []ipam.Pool{testPool}})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			h := fmt.Sprintf("%s-%d", node, i)
			got, err := a.Allocate(context.Background(), ipam.Request{Handle: h})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			fmt.Fprintf(os.Stdout, "%s %s\n", h, got[0].Addr) // unbuffered: out before any kill
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

type child struct {
	node  string
	cmd   *exec.Cmd
	lines chan string
	done  chan error
	mu    sync.Mutex
	acked map[string]netip.Addr
}

func spawn(t *testing.T, dir, node string, n int) *child {
	t.Helper()
	c := &child{node: node, lines: make(chan string, n), done: make(chan error, 1), acked: map[string]netip.Addr{}}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), envChildDir+"="+dir, envChildNode+"="+node, envChildCount+"="+strconv.Itoa(n))
	c.cmd.Stderr = os.Stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h, addr, _ := strings.Cut(sc.Text(), " ")
			c.mu.Lock()
			c.acked[h] = netip.MustParseAddr(addr)
			c.mu.Unlock()
			c.lines <- h
		}
		c.done <- c.cmd.Wait()
	}()
	return c
}

// checkStore reads the store afresh and checks that it parses, holds no address
// twice, and holds every acknowledged allocation under its handle.
func checkStore(t *testing.T, dir string, children []*child) map[netip.Addr]ipam.Allocation {
	t.Helper()
	s := open(t, dir)
	blocks, err := s.ListBlocks(context.Background())
	if err != nil {
		t.Fatalf("store unreadable after the run: %v", err)
	}
	held := map[netip.Addr]ipam.Allocation{}
	for _, b := range blocks {
		if b.Affinity == "" || !testPool.CIDR.Contains(b.CIDR.Addr()) || b.CIDR.Bits() != testPool.BlockSize {
			t.Errorf("block %s (affinity %q) is not a claimed block of the pool", b.CIDR, b.Affinity)
		}
		for _, al := range b.Allocations {
			if prev, dup := held[al.Addr]; dup {
				t.Errorf("%s held by both %s and %s", al.Addr, prev.Handle, al.Handle)
			}
			if !b.CIDR.Contains(al.Addr) {
				t.Errorf("%s stored in block %s", al.Addr, b.CIDR)
			}
			held[al.Addr] = al
		}
	}
	for _, c := range children {
		c.mu.Lock()
		for h, addr := range c.acked {
			if held[addr].Handle != h {
				t.Errorf("acknowledged allocation %s=%s lost (store has %q there)", h, addr, held[addr].Handle)
			}
		}
		c.mu.Unlock()
	}
	return held
}

func TestThreeProcessesAllocateConcurrently(t *testing.T) {
	dir := t.TempDir()
	const n = 200
	var children []*child
	for i := range 3 {
		children = append(children, spawn(t, dir, fmt.Sprintf("node%d", i), n))
	}
	for _, c := range children {
		if err := <-c.done; err != nil {
			t.Fatalf("%s: %v", c.node, err)
		}
		if len(c.acked) != n {
			t.Errorf("%s acknowledged %d allocations, want %d", c.node, len(c.acked), n)
		}
	}
	held := checkStore(t, dir, children)
	if len(held) != 3*n {
		t.Errorf("store holds %d allocations, want %d", len(held), 3*n)
	}
	// The pool had room for everyone, so no node needed another's block.
	s := open(t, dir)
	blocks, _ := s.ListBlocks(context.Background())
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Attrs.Node != b.Affinity {
				t.Errorf("block %s of %s holds %s of %s", b.CIDR, b.Affinity, al.Addr, al.Attrs.Node)
			}
		}
	}
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
			var children []*child
			for i := range 3 {
				children = append(children, spawn(t, dir, fmt.Sprintf("node%d", i), n))
			}
			victim := children[0]
			for range killAfter {
				<-victim.lines
			}
			if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := <-victim.done; err == nil {
				t.Log("victim finished before the kill landed")
			}
			for _, c := range children[1:] {
				if err := <-c.done; err != nil {
					t.Fatalf("%s failed after %s was killed: %v", c.node, victim.node, err)
				}
				if len(c.acked) != n {
					t.Errorf("%s acknowledged %d of %d", c.node, len(c.acked), n)
				}
			}
			held := checkStore(t, dir, children)
			// Only the victim may have stored an allocation it never got to print.
			for _, al := range held {
				acked := false
				for _, c := range children {
					_, ok := c.acked[al.Handle]
					acked = acked || ok
				}
				if !acked && al.Attrs.Node != victim.node {
					t.Errorf("unacknowledged allocation %s=%s of a survivor", al.Handle, al.Addr)
				}
			}
			// The killed node comes back (same name) and allocates on.
			again := spawn(t, dir, victim.node+"-restarted", 20)
			if err := <-again.done; err != nil || len(again.acked) != 20 {
				t.Fatalf("restarted process: %v, %d allocations", err, len(again.acked))
			}
			checkStore(t, dir, append(children, again))
			t.Logf("victim acknowledged %d before SIGKILL; store holds %d", len(victim.acked), len(held))
		})
	}
}
