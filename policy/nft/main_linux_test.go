package nft

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/test/harness"
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		harness.SweepLeftovers() // namespaces of earlier test processes that died
	}
	os.Exit(m.Run())
}

// requirePrivileged stops tb unless it runs as root with nft and ip (a skip
// outside CI, a failure in it: harness.RequireTools).
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	harness.RequireTools(tb, "nft", "ip")
}

// newNodeNS makes a namespace standing for a node.
func newNodeNS(tb testing.TB) *harness.NetNS {
	tb.Helper()
	requirePrivileged(tb)
	return harness.NewNetNS(tb, "pol")
}

// startReconciler runs a reconciler of n's table until the test ends or
// stop is called; stopping leaves the table in place.
func startReconciler(tb testing.TB, n *harness.NetNS) (r *Reconciler, stop func()) {
	tb.Helper()
	r, err := New(Options{NetNS: n.NetNS, Log: testLogger(tb), Resync: 1 << 40})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run() = %v", err)
		}
	}
	tb.Cleanup(stop)
	return r, stop
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
