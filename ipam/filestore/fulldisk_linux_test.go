package filestore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
	"github.com/flatnet-io/flatnet/test/harness"
)

// tmpfs mounts a tmpfs of size bytes on a fresh directory until the test ends.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("flatnet-test", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file on dir's file system until it is full, and returns
// it; removing it frees the space.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); errors.Is(err, unix.ENOSPC) {
			return path
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// On a full disk every release fails to rewrite its block: it is recorded,
// not lost, and written once there is room again.
func TestPrivilegedReleaseOnFullDisk(t *testing.T) {
	harness.Require(t)
	ctx := context.Background()
	dir := tmpfs(t, "256k")
	s, err := filestore.Open(filepath.Join(dir, "store"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pools := []ipam.Pool{{Name: "p", CIDR: testPool.CIDR, BlockSize: testPool.BlockSize}}
	a, err := ipam.New(s, ipam.Config{Node: "n1", Pools: pools, ReleaseGrace: 1e12})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		if _, err := a.Allocate(ctx, ipam.Request{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	held := func() []string {
		t.Helper()
		blocks, err := s.ListBlocks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range blocks {
			for _, al := range b.Allocations {
				out = append(out, al.Handle)
			}
		}
		slices.Sort(out)
		return out
	}

	filler := fill(t, dir)
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "h4"}); err == nil {
		t.Fatal("the disk is not full: an allocation was written")
	}
	if _, err := a.Release(ctx, "h1"); err != nil {
		t.Fatalf("Release on a full disk = %v, want it recorded", err)
	}
	if got := held(); !slices.Equal(got, []string{"h1", "h2", "h3"}) {
		t.Fatalf("held on a full disk: %v", got)
	}
	if err := a.RetryReleases(ctx); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("RetryReleases on a full disk = %v, want ENOSPC", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := a.RetryReleases(ctx); err != nil {
		t.Fatalf("RetryReleases with room: %v", err)
	}
	if got := held(); !slices.Equal(got, []string{"h2", "h3"}) {
		t.Errorf("held after the retry: %v, want h2 and h3", got)
	}
}
