package netns

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// requireRoot stops t unless it runs as root: it fails t in CI (CI=true),
// where a skipped test has not run, and skips it elsewhere.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("privileged test needs root")
	}
	t.Skip("privileged test needs root")
}

// name is a namespace name of this test process's own, which
// harness.SweepLeftovers removes should the process die.
func name(hint string) string { return fmt.Sprintf("ft%d-netns-%s", os.Getpid(), hint) }

// TestPrivilegedNamespaceLife makes a namespace, runs a process in it, and
// removes both.
func TestPrivilegedNamespaceLife(t *testing.T) {
	requireRoot(t)
	n, err := New(name("life"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(n.Name) })
	if !slices.Contains(List(name("")), n.Name) {
		t.Errorf("List does not show %s", n.Name)
	}
	links, err := n.Links()
	if err != nil || !slices.Contains(links, "lo device") {
		t.Errorf("links %q, %v: want lo", links, err)
	}
	if out, err := n.Exec("ip", "-br", "link", "show", "lo"); err != nil || !strings.Contains(out, "UNKNOWN") {
		t.Errorf("lo is not up: %q, %v", out, err)
	}
	p, err := Start(Options{NetNS: n.Name, Log: filepath.Join(t.TempDir(), "sleep.log")}, "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	// `ip netns exec` enters the namespace a moment after it started.
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(Pids(n.Name), p.Pid()); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep %d is not among the namespace's processes %v", p.Pid(), Pids(n.Name))
		}
	}
	if err := Remove(n.Name); err != nil {
		t.Fatal(err)
	}
	<-p.Exited() // killed by Remove: a hang here is the failure
	if Exists(n.Name) {
		t.Errorf("%s still exists", n.Name)
	}
	if err := Remove(n.Name); err != nil {
		t.Errorf("removing a namespace that is gone: %v", err)
	}
}

// TestPrivilegedAddFailsClean leaves nothing behind when a namespace cannot
// be made.
func TestPrivilegedAddFailsClean(t *testing.T) {
	requireRoot(t)
	bad := name("a/b")
	if err := Add(bad); err == nil {
		_ = Remove(bad)
		t.Fatalf("Add(%q) succeeded", bad)
	}
	if left := List(name("")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestAwaitProcessEnded reports a process that ended before it was ready,
// with its log.
func TestAwaitProcessEnded(t *testing.T) {
	p, err := Start(Options{Log: filepath.Join(t.TempDir(), "sh.log")}, "sh", "-c", "echo cannot start; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Await(context.Background(), "ready", func() bool { return false })
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "cannot start") {
		t.Errorf("Await: %v, want the exit status and the log", err)
	}
}

// TestAwaitReady returns once ready holds, and a stopped process is gone.
func TestAwaitReady(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(Options{}, "sh", "-c", "touch "+filepath.Join(dir, "ready")+"; exec sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Await(context.Background(), "ready", FileExists(filepath.Join(dir, "ready"))); err != nil {
		t.Fatal(err)
	}
	p.Stop(time.Minute) // sleep ends on SIGTERM
	if ProcessAlive(p.Pid()) {
		t.Errorf("process %d alive after Stop", p.Pid())
	}
}
