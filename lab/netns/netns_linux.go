package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Dir is where `ip netns` keeps the namespaces' names.
const Dir = "/run/netns"

// Path is the file of a named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// Exists says whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// Add makes a namespace with its loopback up. When it cannot finish, it
// deletes the namespace again.
func Add(name string) error {
	if _, err := Run("ip", "netns", "add", name); err != nil {
		return err
	}
	if _, err := Exec(name, "ip", "link", "set", "lo", "up"); err != nil {
		_, _ = Run("ip", "netns", "del", name)
		return err
	}
	return nil
}

// Remove kills every process in the named namespaces, then deletes them, and
// with them every link they hold. A namespace that does not exist is not an
// error.
func Remove(names ...string) error {
	for _, n := range names {
		KillAll(n)
	}
	var errs []error
	for _, n := range names {
		// Killed processes may take a moment to let go of the namespace.
		for attempt := 0; Exists(n); attempt++ {
			_, err := Run("ip", "netns", "del", n)
			if err == nil {
				break
			}
			if attempt == 20 {
				errs = append(errs, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// List returns the names of the namespaces that start with prefix.
func List(prefix string) []string {
	entries, _ := os.ReadDir(Dir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// Pids lists the processes running in a namespace.
func Pids(name string) []int {
	out, err := Run("ip", "netns", "pids", name)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillAll kills every process in a namespace, but never this one (whose
// thread may be visiting it).
func KillAll(name string) {
	for _, pid := range Pids(name) {
		if pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// ProcessAlive says whether pid runs (a zombie does not).
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// Do runs fn with the calling goroutine in the named namespace and returns
// what fn returns; sockets made there stay there.
func Do[T any](name string, fn func() (T, error)) (T, error) {
	var out T
	err := ns.WithNetNSPath(Path(name), func(ns.NetNS) error {
		var err error
		out, err = fn()
		return err
	})
	return out, err
}
