// Package harness adapts the lab's parts (lab/netns, lab/cniruntime,
// lab/controlplane) to privileged tests: thin testing.TB wrappers that fail
// the test on an error and clean up with t.Cleanup, plus what only tests
// need — Require, a private containerd (StartContainerd), names unique to a test process, a flatnet-agent with a
// test's configuration. It holds no fakes, and it must never touch anything
// outside the namespaces it made.
//
// Privileged tests call Require (or RequireTools) first: outside CI it skips a test that lacks
// root or a tool; in CI (CI=true) it fails it, because a skipped test has not run.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flatnet-io/flatnet/lab/netns"
)

// Require stops t unless it runs as root with every tool on PATH (or at an
// absolute path) and the repository's binaries built.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	missing := missingTools(tools)
	for _, b := range []string{"flatnet", "flatnet-agent", "flatnetctl"} {
		if _, err := os.Stat(Bin(b)); err != nil {
			missing = append(missing, Bin(b)+" (run make build)")
		}
	}
	stopUnless(t, missing, "make test installs and builds them")
}

// missingTools lists root, when this is not root, and the tools not on
// PATH (nor at their absolute path).
func missingTools(tools []string) []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	return missing
}

// stopUnless stops t when something is missing: it fails t in CI
// (CI=true), where a skipped test has not run, and skips it elsewhere.
func stopUnless(t testing.TB, missing []string, hint string) {
	t.Helper()
	if len(missing) == 0 {
		return
	}
	msg := "privileged test needs: " + strings.Join(missing, ", ") + " (" + hint + ")"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Root is the repository's top directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Bin is the path of a binary that `make build` made.
func Bin(name string) string { return filepath.Join(Root(), "bin", name) }

// runPrefix starts the name of everything this test process makes in the
// kernel, so a later run can tell leftovers of a dead run from live ones.
var runPrefix = fmt.Sprintf("ft%d-", os.Getpid())

var seq atomic.Int64

// Name returns a kernel-object name unique to this run: the run prefix, a
// sequence number and a hint.
func Name(hint string) string {
	return fmt.Sprintf("%s%d%s", runPrefix, seq.Add(1), hint)
}

// SweepLeftovers deletes the namespaces that earlier test processes made and
// did not remove (they crashed or were killed), leaving live runs' alone.
func SweepLeftovers() {
	for _, name := range netns.List("ft") {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(name, "ft"), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() || netns.ProcessAlive(pid) {
			continue
		}
		_, _ = netns.Run("ip", "netns", "del", name)
	}
}

// MustRun runs a command (netns.Run) and fails t if it fails.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := netns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
