package filestore

import (
	"context"
	"net/netip"
	"testing"

	"github.com/flatnet-io/flatnet/ipam"
)

// Every write and every removal of a block file is durable, file and
// directory, unless SkipFsync: a rename or an unlink that is not synced
// could be undone by a power loss after the caller was told it happened.
func TestWritesAndRemovalsAreDurable(t *testing.T) {
	for _, skip := range []bool{false, true} {
		var durable, notDurable int
		count := func(sync bool) {
			if sync {
				durable++
			} else {
				notDurable++
			}
		}
		oldWrite, oldRemove := writeFile, removeFile
		writeFile = func(path string, data []byte, sync bool) error { count(sync); return oldWrite(path, data, sync) }
		removeFile = func(path string, sync bool) error { count(sync); return oldRemove(path, sync) }
		t.Cleanup(func() { writeFile, removeFile = oldWrite, oldRemove })

		s, err := Open(t.TempDir(), Options{SkipFsync: skip})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		b, err := s.CreateBlock(ctx, ipam.Block{CIDR: netip.MustParsePrefix("10.0.0.0/26"), Affinity: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		if b, err = s.UpdateBlock(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteBlock(ctx, b); err != nil {
			t.Fatal(err)
		}
		want, other := &durable, notDurable
		if skip {
			want, other = &notDurable, durable
		}
		if *want != 3 || other != 0 {
			t.Errorf("SkipFsync %v: %d durable and %d other writes and removals, want 3 of create, update and delete durable=%v", skip, durable, notDurable, !skip)
		}
	}
}
