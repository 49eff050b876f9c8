package kubestore_test

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
	"time"

	"k8s.io/client-go/rest"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/test/harness"
)

// The test binary doubles as an agent: with these variables set, TestMain
// runs one node's allocations against the API server instead of the tests.
const (
	envChildKubeconfig = "FLATNET_TEST_CHILD_KUBE" // "<url> <ca file> <token>"
	envChildNode       = "FLATNET_TEST_CHILD_NODE"
	envChildCount      = "FLATNET_TEST_CHILD_COUNT"
)

var mpPool = ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.20.0.0/21"), BlockSize: 26}

func childMain() int {
	f := strings.Fields(os.Getenv(envChildKubeconfig))
	ca, err := os.ReadFile(f[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := &rest.Config{Host: f[0], BearerToken: f[2], TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
	n, _ := strconv.Atoi(os.Getenv(envChildCount))
	if err := allocateMany(cfg, os.Getenv(envChildNode), n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// allocateMany makes n concurrent allocations for node and prints "handle
// addr" for each once Allocate returned — a printed line is an acknowledged
// allocation that must never be lost — then "# lost-races N" for the writes
// that lost a compare-and-swap.
func allocateMany(cfg *rest.Config, node string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := kubestore.New(ctx, cfg, kubestore.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	cs := &countingStore{Store: s}
	a, err := ipam.New(cs, ipam.Config{Node: node, Pools: []ipam.Pool{mpPool}})
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
	fmt.Fprintf(os.Stdout, "# lost-races %d\n", cs.lost.Load())
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

type child struct {
	node  string
	cmd   *exec.Cmd
	lines chan string
	done  chan error
	mu    sync.Mutex
	acked map[string]netip.Addr
	lost  int
}

func spawn(t *testing.T, k *harness.Kube, node string, n int) *child {
	t.Helper()
	c := &child{node: node, lines: make(chan string, n), done: make(chan error, 1), acked: map[string]netip.Addr{}, lost: -1}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(),
		envChildKubeconfig+"="+k.URL+" "+k.CAFile+" "+harness.AdminToken,
		envChildNode+"="+node, envChildCount+"="+strconv.Itoa(n))
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
			if v, ok := strings.CutPrefix(sc.Text(), "# lost-races "); ok {
				c.lost, _ = strconv.Atoi(v)
				continue
			}
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

// checkServer reads every block from the API server and checks that no
// address is held twice, every allocation lies in its block, every block is
// a block of the pool with one owner, and every acknowledged allocation is
// there under its handle.
func checkServer(t *testing.T, k *harness.Kube, children []*child) (held map[netip.Addr]ipam.Allocation, blocks int) {
	t.Helper()
	held = map[netip.Addr]ipam.Allocation{}
	objs := listBlocks(t, k.RESTConfig())
	for _, o := range objs {
		cidr := netip.MustParsePrefix(o.Spec.CIDR)
		if o.Spec.Affinity == "" || !mpPool.CIDR.Contains(cidr.Addr()) || cidr.Bits() != mpPool.BlockSize {
			t.Errorf("block %s (affinity %q) is not a claimed block of the pool", cidr, o.Spec.Affinity)
		}
		for _, al := range o.Spec.Allocations {
			addr := netip.MustParseAddr(al.Address)
			if prev, dup := held[addr]; dup {
				t.Errorf("%s held by both %s and %s", addr, prev.Handle, al.Handle)
			}
			if !cidr.Contains(addr) {
				t.Errorf("%s stored in block %s", addr, cidr)
			}
			// The pool has room for everyone: nobody needs another's block.
			if al.Node != o.Spec.Affinity {
				t.Errorf("block %s of %s holds %s of %s", cidr, o.Spec.Affinity, addr, al.Node)
			}
			held[addr] = ipam.Allocation{Addr: addr, Handle: al.Handle, Attrs: ipam.Attrs{Node: al.Node}}
		}
	}
	for _, c := range children {
		c.mu.Lock()
		for h, addr := range c.acked {
			if held[addr].Handle != h {
				t.Errorf("acknowledged allocation %s=%s lost (server has %q there)", h, addr, held[addr].Handle)
			}
		}
		c.mu.Unlock()
	}
	return held, len(objs)
}

func TestThreeProcessesAllocateConcurrently(t *testing.T) {
	k := setup(t)
	const n = 100
	var children []*child
	start := time.Now()
	for i := range 3 {
		children = append(children, spawn(t, k, fmt.Sprintf("node%d", i), n))
	}
	lost := 0
	for _, c := range children {
		if err := <-c.done; err != nil {
			t.Fatalf("%s: %v", c.node, err)
		}
		if len(c.acked) != n {
			t.Errorf("%s acknowledged %d allocations, want %d", c.node, len(c.acked), n)
		}
		lost += c.lost
		t.Logf("%s: %d allocations, %d writes lost a race", c.node, len(c.acked), c.lost)
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
			var children []*child
			for i := range 3 {
				children = append(children, spawn(t, k, fmt.Sprintf("node%d", i), n))
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
			held, _ := checkServer(t, k, children)
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
			again := spawn(t, k, victim.node, 20)
			if err := <-again.done; err != nil || len(again.acked) != 20 {
				t.Fatalf("restarted %s: %v, %d allocations", victim.node, err, len(again.acked))
			}
			checkServer(t, k, append(children, again))
			t.Logf("victim acknowledged %d before SIGKILL; server holds %d", len(victim.acked), len(held))
		})
	}
}
