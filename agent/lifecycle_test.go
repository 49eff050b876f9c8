package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

// agentGoroutines returns the stacks of the goroutines, other than the
// caller's, that run code of this package or a server it starts.
func agentGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || strings.Contains(g, "\ntesting.tRunner(") { // the caller, and tests waiting for subtests
			continue
		}
		if strings.Contains(g, "flatnet-io/flatnet/agent.") || strings.Contains(g, "grpc.(*Server)") || strings.Contains(g, "net/http.(*Server)") {
			out = append(out, g)
		}
	}
	return out
}

// runUntil runs the agent in this goroutine until it answers a call, then
// calls stop, and returns what run returned. With one P, nothing else runs between
// run's return and the caller's next look, so a goroutine run left behind is
// still there to be seen.
func runUntil(t *testing.T, cfg config.Config, e env, ctx context.Context, stop func(), log *slog.Logger) error {
	t.Helper()
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer stop()
		c, err := agentclient.Dial(cfg.API.Socket)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		// Served: everything has started.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, err = c.IPAM.Usage(ctx, &ipampb.UsageRequest{}); err == nil {
				return
			}
		}
		t.Errorf("the agent did not serve: %v", err)
	}()
	err := run(ctx, cfg, e, log)
	<-served
	return err
}

// run owns every goroutine it starts: when it returns, they have ended (the
// API server's, the health server's, the idle-block sweep), whether it was
// stopped or a part of it failed.
func TestRunWaitsForItsGoroutines(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	t.Run("stopped", func(t *testing.T) {
		health, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := runUntil(t, testConfig(t), env{health: health}, ctx, cancel, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("run = %v", err)
		}
		if left := agentGoroutines(); len(left) > 0 {
			t.Errorf("%d goroutines left after run returned:\n%s", len(left), strings.Join(left, "\n\n"))
		}
	})
	t.Run("serving fails", func(t *testing.T) {
		health, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t)
		api, err := listenUnix(cfg.API.Socket)
		if err != nil {
			t.Fatal(err)
		}
		broken := &failingListener{Listener: api, fail: make(chan struct{})}
		err = runUntil(t, cfg, env{health: health, api: broken}, context.Background(), func() { close(broken.fail) }, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "serve API") || !errors.Is(err, errAcceptBroken) {
			t.Errorf("run = %v, want the serving error", err)
		}
		if left := agentGoroutines(); len(left) > 0 {
			t.Errorf("%d goroutines left after run returned:\n%s", len(left), strings.Join(left, "\n\n"))
		}
	})
}

var errAcceptBroken = errors.New("accept broken")

// failingListener fails every Accept once fail is closed, for good.
type failingListener struct {
	net.Listener
	fail chan struct{}
}

func (l *failingListener) Accept() (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	got := make(chan result, 1)
	go func() { c, err := l.Listener.Accept(); got <- result{c, err} }()
	select {
	case r := <-got:
		return r.c, r.err
	case <-l.fail:
		l.Listener.Close()
		if r := <-got; r.c != nil {
			r.c.Close()
		}
		return nil, errAcceptBroken
	}
}

// failingStore refuses every write while failing is set.
type failingStore struct {
	*ipamtest.MemStore
	failing atomic.Bool
}

func (s *failingStore) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	if s.failing.Load() {
		return ipam.Block{}, errors.New("no space left on device")
	}
	return s.MemStore.UpdateBlock(ctx, b)
}

// The agent writes the releases the datastore did not take once it takes
// them again, by itself.
func TestRetryReleases(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	s := &failingStore{MemStore: ipamtest.NewMemStore()}
	alloc, err := ipam.New(s, ipam.Config{Node: "node1", Pools: []ipam.Pool{{Name: "p", CIDR: netip.MustParsePrefix("10.0.0.0/24"), BlockSize: 26}}, ReleaseGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"c1/eth0", "c2/eth0"} {
		if _, err := alloc.Allocate(ctx, ipam.Request{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	s.failing.Store(true)
	if _, err := alloc.Release(ctx, "c1/eth0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); retryReleases(ctx, alloc, time.Millisecond, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-done }()
	time.Sleep(20 * time.Millisecond)
	if got := alloc.PendingReleases(); len(got) != 1 {
		t.Fatalf("pending %v while the store fails", got)
	}
	s.failing.Store(false)
	eventually(t, "the deferred release written", func() bool { return len(alloc.PendingReleases()) == 0 })
	blocks, err := s.ListBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || len(blocks[0].Allocations) != 1 || blocks[0].Allocations[0].Handle != "c2/eth0" {
		t.Errorf("store holds %+v, want only c2/eth0", blocks)
	}
}
