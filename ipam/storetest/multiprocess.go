package storetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/flatnet-io/flatnet/ipam"
)

// The multi-process tests run the test binary again as children, each one node
// that opens its own store on the data the parent set up (a directory, an API
// server: the parent names it in one string, where) and allocates; the parent
// reads what each child acknowledged, may kill one, and checks what the data
// holds afterwards.
const (
	envChildStore = "FLATNET_TEST_CHILD_STORE"
	envChildNode  = "FLATNET_TEST_CHILD_NODE"
	envChildCount = "FLATNET_TEST_CHILD_COUNT"
)

// lostRacesPrefix starts the line a child prints last: how many of its writes
// lost a compare-and-swap.
const lostRacesPrefix = "# lost-races "

// ChildMain is for TestMain. In a process started by Spawn it calls allocate
// with the where, node and count given to Spawn and returns the exit code and
// true; in any other process it returns 0 and false.
//
//	if code, ok := storetest.ChildMain(allocate); ok {
//		os.Exit(code)
//	}
func ChildMain(allocate func(where, node string, n int) error) (int, bool) {
	where := os.Getenv(envChildStore)
	if where == "" {
		return 0, false
	}
	n, _ := strconv.Atoi(os.Getenv(envChildCount))
	if err := allocate(where, os.Getenv(envChildNode), n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1, true
	}
	return 0, true
}

// AllocateMany is a child's work: n concurrent allocations from pool for node
// on s. It prints "handle addr" for each one once Allocate has returned — a
// printed line is an acknowledged allocation that must never be lost — then
// "# lost-races N" for the writes that lost a compare-and-swap.
func AllocateMany(ctx context.Context, s ipam.Store, pool ipam.Pool, node string, n int) error {
	cs := &countingStore{Store: s}
	a, err := ipam.New(cs, ipam.Config{Node: node, Pools: []ipam.Pool{pool}})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			h := fmt.Sprintf("%s-%d", node, i)
			got, err := a.Allocate(ctx, ipam.Request{Handle: h})
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
	fmt.Fprintf(os.Stdout, "%s%d\n", lostRacesPrefix, cs.lost.Load())
	close(errs)
	return <-errs
}

// countingStore counts the writes that lost a race.
type countingStore struct {
	ipam.Store
	lost atomic.Int64
}

func (c *countingStore) count(err error) {
	if errors.Is(err, ipam.ErrConflict) || errors.Is(err, ipam.ErrExists) || errors.Is(err, ipam.ErrNotFound) {
		c.lost.Add(1)
	}
}

func (c *countingStore) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	out, err := c.Store.CreateBlock(ctx, b)
	c.count(err)
	return out, err
}

func (c *countingStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	out, err := c.Store.UpdateBlock(ctx, b)
	c.count(err)
	return out, err
}

func (c *countingStore) DeleteBlock(ctx context.Context, b ipam.Block) error {
	err := c.Store.DeleteBlock(ctx, b)
	c.count(err)
	return err
}

// Child is one allocating process started by Spawn.
type Child struct {
	Node string
	// Lines has the handle of each acknowledged allocation as the child
	// prints it; it holds all of them, so nobody has to read it.
	Lines <-chan string
	// Done has the child's exit once its output has been read to the end.
	Done <-chan error
	// Lost is how many of the child's writes lost a race, as it reported on
	// finishing, or -1 if it did not; read it after Done.
	Lost int

	cmd   *exec.Cmd
	mu    sync.Mutex
	acked map[string]netip.Addr
}

// Spawn starts a child that opens its store at where and makes n allocations
// for node. The child is killed when t ends, if it is still running.
func Spawn(t *testing.T, where, node string, n int) *Child {
	t.Helper()
	lines, done := make(chan string, n), make(chan error, 1)
	c := &Child{Node: node, Lines: lines, Done: done, Lost: -1, acked: map[string]netip.Addr{}}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), envChildStore+"="+where, envChildNode+"="+node, envChildCount+"="+strconv.Itoa(n))
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
			if v, ok := strings.CutPrefix(sc.Text(), lostRacesPrefix); ok {
				c.Lost, _ = strconv.Atoi(v)
				continue
			}
			h, addr, _ := strings.Cut(sc.Text(), " ")
			c.mu.Lock()
			c.acked[h] = netip.MustParseAddr(addr)
			c.mu.Unlock()
			lines <- h
		}
		done <- c.cmd.Wait()
	}()
	return c
}

// SpawnNodes spawns one child for each of node0, node1, … up to count, each
// making n allocations on the store at where.
func SpawnNodes(t *testing.T, where string, count, n int) []*Child {
	t.Helper()
	var children []*Child
	for i := range count {
		children = append(children, Spawn(t, where, fmt.Sprintf("node%d", i), n))
	}
	return children
}

// Acked returns a copy of what the child has acknowledged so far: address by
// handle.
func (c *Child) Acked() map[string]netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]netip.Addr, len(c.acked))
	for h, a := range c.acked {
		out[h] = a
	}
	return out
}

// WaitAll waits for every child to finish and checks that each acknowledged
// all n of its allocations.
func WaitAll(t *testing.T, children []*Child, n int) {
	t.Helper()
	for _, c := range children {
		if err := <-c.Done; err != nil {
			t.Fatalf("%s: %v", c.Node, err)
		}
		if got := len(c.Acked()); got != n {
			t.Errorf("%s acknowledged %d allocations, want %d", c.Node, got, n)
		}
	}
}

// KillFirstAfter kills the first of children with SIGKILL once it has
// acknowledged killAfter allocations and waits for it, then waits for the
// others to finish all n of theirs. It returns the killed child.
func KillFirstAfter(t *testing.T, children []*Child, killAfter, n int) *Child {
	t.Helper()
	victim := children[0]
	for range killAfter {
		<-victim.Lines
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-victim.Done; err == nil {
		t.Log("victim finished before the kill landed")
	}
	for _, c := range children[1:] {
		if err := <-c.Done; err != nil {
			t.Fatalf("%s failed after %s was killed: %v", c.Node, victim.Node, err)
		}
		if got := len(c.Acked()); got != n {
			t.Errorf("%s acknowledged %d of %d", c.Node, got, n)
		}
	}
	return victim
}

// CheckHeld checks blocks, read afresh after a run: each is a claimed block
// of pool, no address is held twice, every allocation lies in its block, and
// every allocation a child acknowledged is there under its handle. source
// names where the blocks came from ("store", "server"). It returns the
// allocations by address.
func CheckHeld(t *testing.T, pool ipam.Pool, blocks []ipam.Block, children []*Child, source string) map[netip.Addr]ipam.Allocation {
	t.Helper()
	held := map[netip.Addr]ipam.Allocation{}
	for _, b := range blocks {
		if b.Affinity == "" || !pool.CIDR.Contains(b.CIDR.Addr()) || b.CIDR.Bits() != pool.BlockSize {
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
		for h, addr := range c.Acked() {
			if held[addr].Handle != h {
				t.Errorf("acknowledged allocation %s=%s lost (%s has %q there)", h, addr, source, held[addr].Handle)
			}
		}
	}
	return held
}

// CheckOwnBlocks checks that every allocation lies in a block of its own
// node: with room in the pool for everyone, no node needs another's block.
func CheckOwnBlocks(t *testing.T, blocks []ipam.Block) {
	t.Helper()
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Attrs.Node != b.Affinity {
				t.Errorf("block %s of %s holds %s of %s", b.CIDR, b.Affinity, al.Addr, al.Attrs.Node)
			}
		}
	}
}

// CheckOnlyVictimUnacked checks that every allocation in held that no child
// acknowledged is the victim's: only a killed process may have stored an
// allocation it never got to print.
func CheckOnlyVictimUnacked(t *testing.T, held map[netip.Addr]ipam.Allocation, children []*Child, victim *Child) {
	t.Helper()
	acked := map[string]bool{}
	for _, c := range children {
		for h := range c.Acked() {
			acked[h] = true
		}
	}
	for _, al := range held {
		if !acked[al.Handle] && al.Attrs.Node != victim.Node {
			t.Errorf("unacknowledged allocation %s=%s of a survivor", al.Handle, al.Addr)
		}
	}
}
