package filestore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/flatnet-io/flatnet/ipam/filestore"
	"github.com/flatnet-io/flatnet/ipam/storetest"
)

func open(t *testing.T, dir string) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(dir, filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return open(t, t.TempDir()) })
}

// Two stores on one directory are what two agents on one host are.
func TestContractTwoOpenersShareState(t *testing.T) {
	dir := t.TempDir()
	a, b := open(t, dir), open(t, dir)
	storetest.RunPair(t, a, b)
}

func TestOpenRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	leftover := filepath.Join(dir, "blocks", ".tmp-123")
	if err := os.WriteFile(leftover, []byte(`{"revi`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("leftover temp file still there after Open: %v", err)
	}
	if blocks, err := s.ListBlocks(t.Context()); err != nil || len(blocks) != 0 {
		t.Errorf("ListBlocks = %v, %v; want none", blocks, err)
	}
}

func TestCorruptFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "blocks", "10.0.0.0_26.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListBlocks(t.Context()); err == nil {
		t.Error("ListBlocks over a corrupt file: no error")
	}
}
