package nft

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
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

// requirePrivileged stops tb unless it runs as root with nft and ip: outside
// CI it skips, in CI (CI=true) it fails, because a skipped test has not run.
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"nft", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "privileged test needs: " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
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
