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
