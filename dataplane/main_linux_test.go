package dataplane

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

// requirePrivileged stops tb unless it runs as root with iproute2 (a skip
// outside CI, a failure in it: harness.RequireTools).
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	harness.RequireTools(tb, "ip")
}

// newNodeNS makes a namespace standing for a node: an uplink veth (up0, its
// peer up1 in the same namespace) with 192.0.2.1/24 and 2001:db8::1/64, so
// next hops in those subnets are reachable.
func newNodeNS(tb testing.TB) *harness.NetNS {
	tb.Helper()
	requirePrivileged(tb)
	n := harness.NewNetNS(tb, "dp")
	for _, args := range [][]string{
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"ip", "link", "set", "up0", "up"},
		{"ip", "link", "set", "up1", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "up0"},
		{"ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "up0", "nodad"},
	} {
		n.MustExec(tb, args...)
	}
	return n
}

// startReconciler runs a reconciler in n until the test ends; it is stopped
// and closed, leaving its routes, before the namespace goes.
func startReconciler(tb testing.TB, n *harness.NetNS) (*Reconciler, func()) {
	tb.Helper()
	r, err := New(Options{NetNS: n.NetNS, Log: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run() = %v", err)
		}
		if err := r.Close(); err != nil {
			tb.Errorf("Close() = %v", err)
		}
	}
	tb.Cleanup(stop)
	return r, stop
}

// testLogger sends logs to the test's log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
