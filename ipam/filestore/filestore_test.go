package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flatnet-io/flatnet/ipam"
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

// blockWith returns a block of node with an allocation per handle, from
// the block's first address.
func blockWith(cidr, node string, handles ...string) ipam.Block {
	b := ipam.Block{CIDR: netip.MustParsePrefix(cidr), Affinity: node}
	addr := b.CIDR.Addr()
	for _, h := range handles {
		b.Allocations = append(b.Allocations, ipam.Allocation{Addr: addr, Handle: h, Attrs: ipam.Attrs{Node: node, Namespace: "ns", Pod: h}})
		addr = addr.Next()
	}
	return b
}

func blockFile(dir, cidr string) string {
	return filepath.Join(dir, "blocks", strings.ReplaceAll(cidr, "/", "_")+".json")
}

// damage replaces the block file of cidr with what keep makes of it.
func damage(t *testing.T, dir, cidr string, keep func([]byte) []byte) []byte {
	t.Helper()
	path := blockFile(dir, cidr)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	torn := keep(data)
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	return torn
}

// tornIn cuts a block file in the middle of the allocation of handle.
func tornIn(handle string) func([]byte) []byte {
	return func(data []byte) []byte {
		i := bytes.Index(data, []byte(`"handle":"`+handle+`"`))
		if i < 0 {
			panic("no " + handle + " in " + string(data))
		}
		return data[:i+5]
	}
}

func empty([]byte) []byte { return nil }

// asideFiles returns the contents of the block files set aside.
func asideFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".json.damaged-") {
			b, err := os.ReadFile(filepath.Join(dir, "blocks", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
	}
	return out
}

// A torn or empty block file is set aside and replaced by the block
// recovered from what is known, marked damaged; the other blocks are served
// as ever, and it is logged once.
func TestDamagedBlockFileIsSetAsideAndRecovered(t *testing.T) {
	ctx := context.Background()
	const a, b = "10.0.0.0/26", "10.0.0.64/26"
	tests := []struct {
		name    string
		restart bool // damaged while the store is closed, found by Open
		damage  func([]byte) []byte
		want    ipam.Block // without Damaged
	}{
		{"torn, found at start", true, tornIn("h3"), blockWith(a, "n1", "h1", "h2")},
		{"empty, found at start", true, empty, ipam.Block{CIDR: netip.MustParsePrefix(a)}},
		{"torn while running", false, tornIn("h1"), blockWith(a, "n1", "h1", "h2", "h3")},
		{"empty while running", false, empty, blockWith(a, "n1", "h1", "h2", "h3")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			log, logs := logTo(t)
			s, err := filestore.Open(dir, filestore.Options{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			for _, blk := range []ipam.Block{blockWith(a, "n1", "h1", "h2", "h3"), blockWith(b, "n2", "h9")} {
				if _, err := s.CreateBlock(ctx, blk); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.ListBlocks(ctx); err != nil { // what a running agent has seen
				t.Fatal(err)
			}
			if tt.restart {
				s.Close()
			}
			torn := damage(t, dir, a, tt.damage)
			if tt.restart {
				if s, err = filestore.Open(dir, filestore.Options{Logger: log}); err != nil {
					t.Fatalf("Open over a damaged block file: %v", err)
				}
			}
			for range 2 {
				blocks, err := s.ListBlocks(ctx)
				if err != nil {
					t.Fatalf("ListBlocks: %v", err)
				}
				if len(blocks) != 2 {
					t.Fatalf("ListBlocks = %v, want both blocks", blocks)
				}
				slices.SortFunc(blocks, func(x, y ipam.Block) int { return x.CIDR.Addr().Compare(y.CIDR.Addr()) })
				got := blocks[0]
				if got.Damaged.IsZero() {
					t.Errorf("recovered block not marked damaged: %+v", got)
				}
				if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(ipam.Block{}, "Damaged", "Revision"), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
					t.Errorf("recovered block (-want +got):\n%s", diff)
				}
				if !blocks[1].Damaged.IsZero() || len(blocks[1].Allocations) != 1 {
					t.Errorf("the other block: %+v", blocks[1])
				}
			}
			if aside := asideFiles(t, dir); len(aside) != 1 || aside[0] != string(torn) {
				t.Errorf("set aside: %q, want the damaged file's %q", aside, torn)
			}
			if n := strings.Count(logs.String(), "damaged block file set aside"); n != 1 {
				t.Errorf("logged %d times, want once:\n%s", n, logs)
			}
			// The recovered block is written like any other.
			got, err := s.GetBlock(ctx, netip.MustParsePrefix(a))
			if err != nil {
				t.Fatal(err)
			}
			got.Affinity = "n1"
			if _, err := s.UpdateBlock(ctx, got); err != nil {
				t.Errorf("UpdateBlock of the recovered block: %v", err)
			}
		})
	}
}

// A write that meets a damaged file recovers it and loses the race: the
// caller reads again.
func TestWriteOverDamagedBlockFileConflicts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	blk, err := s.CreateBlock(ctx, blockWith("10.0.0.0/26", "n1", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	damage(t, dir, "10.0.0.0/26", empty)
	if _, err := s.UpdateBlock(ctx, blk); !errors.Is(err, ipam.ErrConflict) {
		t.Fatalf("UpdateBlock over a damaged file = %v, want ErrConflict", err)
	}
	got, err := s.GetBlock(ctx, blk.CIDR)
	if err != nil || got.Damaged.IsZero() || len(got.Allocations) != 1 {
		t.Errorf("after the write: %+v, %v; want the block recovered", got, err)
	}
}

// A file that is not a block file is set aside, not read as a block.
func TestStrayFileIsSetAside(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "blocks", "notes.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if blocks, err := s.ListBlocks(t.Context()); err != nil || len(blocks) != 0 {
		t.Errorf("ListBlocks = %v, %v; want none", blocks, err)
	}
	if aside := asideFiles(t, dir); len(aside) != 1 {
		t.Errorf("set aside: %q", aside)
	}
}

// One damaged block file does not stop the node's IPAM: allocations,
// releases from the other blocks and listings go on; no new address is
// placed in the damaged block.
func TestDamagedBlockFileDoesNotStopIPAM(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	p := ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.0.0.0/24"), BlockSize: 26}
	n1, err := ipam.New(s, ipam.Config{Node: "n1", Pools: []ipam.Pool{p}})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := ipam.New(s, ipam.Config{Node: "n2", Pools: []ipam.Pool{p}})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"a1", "a2"} {
		if _, err := n1.Allocate(ctx, ipam.Request{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n2.Allocate(ctx, ipam.Request{Handle: "b1"}); err != nil {
		t.Fatal(err)
	}
	damage(t, dir, "10.0.0.0/26", tornIn("a2"))

	got, err := n1.Allocate(ctx, ipam.Request{Handle: "a3"})
	if err != nil {
		t.Fatalf("Allocate with a damaged block: %v", err)
	}
	if a := got[0].Addr; netip.MustParsePrefix("10.0.0.0/26").Contains(a) {
		t.Errorf("a3 got %v, in the damaged block", a)
	}
	if gone, err := n2.Release(ctx, "b1"); err != nil || len(gone) != 1 {
		t.Errorf("Release from an intact block = %v, %v", gone, err)
	}
	if gone, err := n1.Release(ctx, "a1"); err != nil || len(gone) != 1 {
		t.Errorf("Release of what the damaged block still lists = %v, %v", gone, err)
	}
	if blocks, err := n1.Blocks(ctx); err != nil || len(blocks) != 2 { // the damaged one and a3's; b1's went empty
		t.Errorf("Blocks = %v, %v", blocks, err)
	}
}

// logBuffer keeps what a store logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func logTo(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}
