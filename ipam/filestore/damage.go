package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/flatnet-io/flatnet/internal/atomicfile"
	"github.com/flatnet-io/flatnet/ipam"
)

// A block file can be damaged though writes are renames: torn or empty
// after a power loss with fsync off, or by a disk or a hand. One such file
// must not stop the node's IPAM, nor be taken for an unclaimed block (whose
// addresses would then be handed out again). So it is set aside, once, by
// whoever meets it first (Open, a listing, a write), and replaced by the
// block recovered from what is known: the file's name (the CIDR), what of
// its content still decodes (affinity, the allocations before the tear) and
// this process's last good copy of it, if any. The recovered block is marked
// ipam.Block.Damaged: it may have lost allocations that are still in use, so
// the allocator places nothing new in it.

// errDamaged marks a block file that is not a whole block file for its name.
var errDamaged = errors.New("damaged block file")

// damagedSuffix follows a block file's name when it is set aside: the name
// no longer ends in .json, so nothing reads it as a block.
const damagedSuffix = ".damaged-"

// recover recovers the damaged block file name under the lock and returns
// the block now stored there; ipam.ErrNotFound when there is none (the file
// went, or was not a block file).
func (s *Store) recover(ctx context.Context, name string) (b ipam.Block, err error) {
	err = s.locked(ctx, func() error {
		if err := s.recoverLocked(name); err != nil {
			return err
		}
		b, err = readBlock(filepath.Join(s.blocksDir, name))
		return err
	})
	return b, err
}

// recoverLocked sets the block file name aside and replaces it with the
// block recovered from it, if it is still damaged: another process may have
// done it already. The lock must be held.
func (s *Store) recoverLocked(name string) error {
	path := filepath.Join(s.blocksDir, name)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read block: %w", err)
	}
	if _, err := decodeBlock(name, data); err == nil {
		return nil // recovered meanwhile
	}
	now := time.Now().UTC()
	// A copy first, then the recovered block over the damaged one: at no
	// point is the block missing, which would make it look unclaimed.
	aside := path + damagedSuffix + now.Format("20060102T150405.000000000Z")
	if err := atomicfile.Write(aside, data, !s.opts.SkipFsync); err != nil {
		return fmt.Errorf("set aside damaged block file %s: %w", path, err)
	}
	cidr, ok := cidrOfName(name)
	if !ok {
		if err := atomicfile.Remove(path, !s.opts.SkipFsync); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("set aside %s: %w", path, err)
		}
		s.log.Error("a file in the block directory is not a block file: set aside", "file", aside)
		return nil
	}
	s.cacheMu.Lock()
	cached, haveCached := s.parsed[name]
	s.cacheMu.Unlock()
	b := salvage(cidr, data)
	salvaged := len(b.Allocations)
	if haveCached {
		b = merge(b, cached.block)
	}
	b.Damaged = now
	if _, err := s.write(b); err != nil {
		return fmt.Errorf("recover damaged block %s: %w", cidr, err)
	}
	s.log.Warn("damaged block file set aside; block recovered from what is known, no new address is placed in it",
		"block", cidr, "file", aside, "bytes", len(data), "affinity", b.Affinity,
		"allocations", len(b.Allocations), "fromFile", salvaged, "fromMemory", haveCached)
	return nil
}

// salvage returns the block cidr with what of data, a damaged block file,
// still decodes: its affinity and its allocations up to the first one that
// does not, those in cidr, once each.
func salvage(cidr netip.Prefix, data []byte) ipam.Block {
	b := ipam.Block{CIDR: cidr}
	dec := json.NewDecoder(bytes.NewReader(data))
	if !expect(dec, json.Delim('{')) {
		return b
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return b
		}
		if key != "block" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return b
			}
			continue
		}
		salvageBlock(dec, &b)
		sortAllocations(b.Allocations)
		return b
	}
	return b
}

// salvageBlock reads the block object dec is at into b, as far as it can.
func salvageBlock(dec *json.Decoder, b *ipam.Block) {
	if !expect(dec, json.Delim('{')) {
		return
	}
	seen := map[netip.Addr]bool{}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return
		}
		switch key {
		case "affinity":
			if dec.Decode(&b.Affinity) != nil {
				return
			}
		case "allocations":
			if !expect(dec, json.Delim('[')) {
				return
			}
			for dec.More() {
				var al ipam.Allocation
				if dec.Decode(&al) != nil {
					return
				}
				if al.Addr.IsValid() && b.CIDR.Contains(al.Addr) && al.Handle != "" && !seen[al.Addr] {
					seen[al.Addr] = true
					b.Allocations = append(b.Allocations, al)
				}
			}
			if !expect(dec, json.Delim(']')) {
				return
			}
		default: // cidr is the name's; emptySince and damaged are set again
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return
			}
		}
	}
}

func expect(dec *json.Decoder, want json.Token) bool {
	tok, err := dec.Token()
	return err == nil && tok == want
}

// merge adds to b, salvaged from a damaged file, what this process's last
// good copy of it knew: its affinity if b has none, and its allocations of
// addresses b does not list. An allocation released since the copy comes
// back, held until it is released again; one made since is not lost.
func merge(b, last ipam.Block) ipam.Block {
	if b.Affinity == "" {
		b.Affinity = last.Affinity
	}
	for _, al := range last.Allocations {
		if !slices.ContainsFunc(b.Allocations, func(x ipam.Allocation) bool { return x.Addr == al.Addr }) {
			b.Allocations = append(b.Allocations, al)
		}
	}
	sortAllocations(b.Allocations)
	return b
}

// sortAllocations sorts by address, as a block keeps them.
func sortAllocations(als []ipam.Allocation) {
	slices.SortFunc(als, func(x, y ipam.Allocation) int { return x.Addr.Compare(y.Addr) })
}
