// Package harness runs flatnet's real parts for privileged tests: network
// namespaces as nodes and pods, the built flatnet-agent inside a node, and the
// CNI plugin called through libcni as a container runtime calls it, and a
// private containerd (StartContainerd). It holds no fakes, and it must never
// touch anything outside the namespaces and directories it made.
//
// Privileged tests call Require (or RequireTools) first: outside CI it skips a test that lacks
// root or a tool; in CI (CI=true) it fails it, because a skipped test has not run.
package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// Require stops t unless it runs as root with every tool on PATH (or at an
// absolute path) and the repository's binaries built.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, b := range []string{"flatnet", "flatnet-agent", "flatnetctl"} {
		if _, err := os.Stat(Bin(b)); err != nil {
			missing = append(missing, Bin(b)+" (run make build)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "privileged test needs: " + strings.Join(missing, ", ") + " (make test installs and builds them)"
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
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "ft")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// Run runs a command and returns its combined output; a failure includes it.
func Run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// MustRun is Run that fails t.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
