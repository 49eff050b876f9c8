package agent

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// With a permissive umask and a socket directory that others can enter, the
// socket must never be at its path with a mode other than 0600, not even
// between bind and chmod: a watcher looks at the path all the while.
func TestListenUnixNeverExposesTheSocket(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flatnet.sock")

	var stop, seen, exposed atomic.Int64
	var exposedMode atomic.Uint32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for stop.Load() == 0 {
			fi, err := os.Lstat(path)
			if err != nil {
				continue
			}
			seen.Add(1)
			if fi.Mode().Type() == fs.ModeSocket && fi.Mode().Perm() != 0o600 {
				exposed.Add(1)
				exposedMode.Store(uint32(fi.Mode().Perm()))
			}
		}
	}()
	for range 2000 {
		lis, err := listenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		lis.Close()
	}
	stop.Store(1)
	<-done
	if n := exposed.Load(); n > 0 {
		t.Errorf("the socket was at %s with mode %v %d times (of %d looks)", path, fs.FileMode(exposedMode.Load()), n, seen.Load())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left in the socket directory: %v", entries)
	}
}

// A socket path as long as a socket address allows still works, though the
// socket is bound at a longer path first.
func TestListenUnixLongPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("s", sunPathMax-len(dir)-1))
	if len(path) != sunPathMax {
		t.Fatalf("path of %d bytes", len(path))
	}
	lis, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket at %s: %v, %v", path, fi, err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Error(err)
	} else {
		c.Close()
	}
	lis.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close: %v, want the socket gone", err)
	}
}
