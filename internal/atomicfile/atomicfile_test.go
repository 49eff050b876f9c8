package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAndLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	for _, content := range []string{"one", "two"} {
		for _, sync := range []bool{false, true} {
			if err := Write(path, []byte(content), sync); err != nil {
				t.Fatalf("Write(%q, sync=%v): %v", content, sync, err)
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != content {
				t.Errorf("after Write(%q): %q, %v", content, got, err)
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %v, want only f.json", entries)
	}
	// A failed rename (the target is a non-empty directory) leaves nothing.
	if err := os.MkdirAll(filepath.Join(dir, "d", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "d"), []byte("x"), false); err == nil {
		t.Error("Write over a directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("after a failed write the directory holds %v, want f.json and d", entries)
	}
}

// countDirSyncs counts the directories fsync'ed until the test ends.
func countDirSyncs(t *testing.T) map[string]int {
	t.Helper()
	synced := map[string]int{}
	old := syncDir
	syncDir = func(d *os.File) error {
		synced[d.Name()]++
		return old(d)
	}
	t.Cleanup(func() { syncDir = old })
	return synced
}

// With sync, a rename is durable too: the directory that holds the new name
// is fsync'ed after it, or a power loss could bring back the old file.
func TestSyncedWriteSyncsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	synced := countDirSyncs(t)
	if err := Write(path, []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 0 {
		t.Errorf("Write without sync synced %v", synced)
	}
	if err := Write(path, []byte("two"), true); err != nil {
		t.Fatal(err)
	}
	if synced[dir] != 1 || len(synced) != 1 {
		t.Errorf("Write with sync synced %v, want %s once", synced, dir)
	}
}

// Remove takes a file away, durably with sync; a missing file is an error
// that says so.
func TestRemove(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	synced := countDirSyncs(t)
	for _, sync := range []bool{false, true} {
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Remove(path, sync); err != nil {
			t.Fatalf("Remove(sync=%v): %v", sync, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("after Remove(sync=%v): %v", sync, err)
		}
	}
	if synced[dir] != 1 || len(synced) != 1 {
		t.Errorf("Remove synced %v, want %s once (with sync)", synced, dir)
	}
	if err := Remove(path, true); !os.IsNotExist(err) {
		t.Errorf("Remove of a missing file = %v, want a not-exist error", err)
	}
}
