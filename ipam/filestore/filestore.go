// Package filestore is the embedded default ipam.Store: one JSON file per claimed
// block under a directory, for a lab or a single host without Kubernetes.
//
// Several processes may share one directory (the lab runs several agents on one
// machine). Writers take an exclusive flock on the directory's lock file, check the
// revision, write a temporary file, fsync it, rename it over the block's file and
// fsync the directory; readers take no lock, because a rename is atomic. Files and
// the directory are fsync'ed (a write is on disk when it returns, a removal too)
// unless Options.SkipFsync says otherwise. A process killed at any point
// therefore leaves every block either as it was or as it was written, never torn,
// and the kernel drops its lock with it. A block file damaged all the same (a
// power loss without fsync, a disk) is set aside and the block recovered from
// what is known, marked damaged (damage.go). The package must not hold allocation
// logic: that is ipam's.
package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/flatnet-io/flatnet/internal/atomicfile"
	"github.com/flatnet-io/flatnet/ipam"
)

// Options tune a Store.
type Options struct {
	// SkipFsync acknowledges writes before they reach the disk: a killed process
	// still never leaves a torn file, but a power loss may lose or tear the
	// latest writes. For a store on tmpfs, or a lab.
	SkipFsync bool
	// Logger is told of damaged block files set aside; nil: discard.
	Logger *slog.Logger
}

// Store keeps blocks as files under a directory.
type Store struct {
	opts      Options
	log       *slog.Logger
	blocksDir string
	lock      *os.File
	mu        sync.Mutex // flock is per open file; this orders our own goroutines

	// parsed caches decoded block files by name, so that listing does not decode
	// every file again. An entry is used only while the file's identity (inode,
	// size, times) is unchanged; it is only ever a hint, because every write
	// checks the revision against the file itself under the lock, and a conflict
	// drops the entry.
	cacheMu sync.Mutex
	parsed  map[string]cachedBlock
}

type cachedBlock struct {
	id    fileID
	block ipam.Block
}

type fileID struct {
	ino, size    uint64
	mtime, ctime int64
}

var _ ipam.Store = (*Store)(nil)

// How block files are written and removed, durably unless SkipFsync (the
// file and its directory synced); tests look at what is asked.
var (
	writeFile  = atomicfile.Write
	removeFile = atomicfile.Remove
)

// record is what a block file holds.
type record struct {
	// Revision is random, not a counter, so that a block deleted and claimed again
	// never repeats a revision an old reader may still hold.
	Revision string     `json:"revision"`
	Block    ipam.Block `json:"block"`
}

// Open opens (creating it if needed) the store in dir, removes temporary files
// that a writer killed mid-write left behind, and sets aside and recovers
// every damaged block file (see recoverLocked).
func Open(dir string, opts Options) (*Store, error) {
	s := &Store{opts: opts, log: opts.Logger, blocksDir: filepath.Join(dir, "blocks"), parsed: map[string]cachedBlock{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(s.blocksDir, 0o700); err != nil {
		return nil, fmt.Errorf("open file store: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open file store: %w", err)
	}
	s.lock = lock
	err = s.locked(context.Background(), func() error {
		entries, err := os.ReadDir(s.blocksDir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			// Writers only make temporary files while holding the lock we hold.
			if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
				if err := os.Remove(filepath.Join(s.blocksDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				continue
			}
			if isBlockFile(e.Name()) {
				if _, err := readBlock(filepath.Join(s.blocksDir, e.Name())); errors.Is(err, errDamaged) {
					if err := s.recoverLocked(e.Name()); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open file store: %w", err)
	}
	return s, nil
}

// Close releases the lock file.
func (s *Store) Close() error { return s.lock.Close() }

// ListBlocks implements ipam.Store.
func (s *Store) ListBlocks(ctx context.Context) ([]ipam.Block, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.blocksDir)
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	blocks := make([]ipam.Block, 0, len(entries))
	for _, e := range entries {
		if !isBlockFile(e.Name()) {
			continue
		}
		b, err := s.readCached(e.Name())
		if errors.Is(err, errDamaged) {
			b, err = s.recover(ctx, e.Name())
		}
		if errors.Is(err, ipam.ErrNotFound) { // deleted since ReadDir, or not a block
			continue
		}
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// GetBlock returns the block claimed at cidr, or ipam.ErrNotFound: the
// contract tests' read of one block (storetest.Store).
func (s *Store) GetBlock(ctx context.Context, cidr netip.Prefix) (ipam.Block, error) {
	if err := ctx.Err(); err != nil {
		return ipam.Block{}, err
	}
	b, err := readBlock(s.path(cidr))
	if errors.Is(err, errDamaged) {
		return s.recover(ctx, filepath.Base(s.path(cidr)))
	}
	return b, err
}

// CreateBlock implements ipam.Store.
func (s *Store) CreateBlock(ctx context.Context, b ipam.Block) (out ipam.Block, err error) {
	err = s.locked(ctx, func() error {
		if _, err := os.Stat(s.path(b.CIDR)); err == nil {
			return ipam.ErrExists
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		out, err = s.write(b)
		return err
	})
	return out, wrap("create", b.CIDR, err)
}

// UpdateBlock implements ipam.Store.
func (s *Store) UpdateBlock(ctx context.Context, b ipam.Block) (out ipam.Block, err error) {
	err = s.locked(ctx, func() error {
		if err := s.checkRevision(b); err != nil {
			return err
		}
		out, err = s.write(b)
		return err
	})
	s.forgetOnConflict(b.CIDR, err)
	return out, wrap("update", b.CIDR, err)
}

// DeleteBlock implements ipam.Store.
func (s *Store) DeleteBlock(ctx context.Context, b ipam.Block) error {
	err := s.locked(ctx, func() error {
		if err := s.checkRevision(b); err != nil {
			return err
		}
		return removeFile(s.path(b.CIDR), !s.opts.SkipFsync)
	})
	s.forgetOnConflict(b.CIDR, err)
	return wrap("delete", b.CIDR, err)
}

// checkRevision compares b's revision with the file's own, never with the cache:
// this comparison is what makes a write a compare-and-swap.
func (s *Store) checkRevision(b ipam.Block) error {
	path := s.path(b.CIDR)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ipam.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read block: %w", err)
	}
	rev, err := revisionOf(data)
	if err != nil {
		// Damaged: recovered now, and the caller reads it again.
		if err := s.recoverLocked(filepath.Base(path)); err != nil {
			return err
		}
		return ipam.ErrConflict
	}
	if rev != b.Revision {
		return ipam.ErrConflict
	}
	return nil
}

// revisionOf reads the revision, the first field of a block file, without
// decoding the rest.
func revisionOf(data []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	for _, want := range []any{json.Delim('{'), "revision"} {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		if tok != want {
			return "", fmt.Errorf("want %v at the start, got %v", want, tok)
		}
	}
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	rev, ok := tok.(string)
	if !ok || rev == "" {
		return "", fmt.Errorf("bad revision %v", tok)
	}
	return rev, nil
}

// write stores b under a new revision: temporary file, fsync, rename.
func (s *Store) write(b ipam.Block) (ipam.Block, error) {
	b = b.Clone()
	b.Revision = strconv.FormatUint(rand.Uint64(), 16)
	data, err := json.Marshal(record{Revision: b.Revision, Block: b})
	if err != nil {
		return ipam.Block{}, err
	}
	path := s.path(b.CIDR)
	if err := writeFile(path, data, !s.opts.SkipFsync); err != nil {
		return ipam.Block{}, err
	}
	s.remember(path, b)
	return b, nil
}

// locked runs fn holding both the in-process mutex and the cross-process flock.
func (s *Store) locked(ctx context.Context, fn func() error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := flock(s.lock, unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", s.lock.Name(), err)
	}
	defer func() {
		// A lock we cannot drop would stall every other agent on the host: say so.
		if uerr := flock(s.lock, unix.LOCK_UN); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unlock %s: %w", s.lock.Name(), uerr))
		}
	}()
	return fn()
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// readCached returns the block in the named file, decoding it only when the file
// is not the one decoded last time.
func (s *Store) readCached(name string) (ipam.Block, error) {
	path := filepath.Join(s.blocksDir, name)
	id, err := identify(path)
	if err != nil {
		return ipam.Block{}, err
	}
	s.cacheMu.Lock()
	c, ok := s.parsed[name]
	s.cacheMu.Unlock()
	if ok && c.id == id {
		return c.block.Clone(), nil
	}
	b, err := readBlock(path)
	if err != nil {
		return b, err
	}
	s.cacheMu.Lock()
	s.parsed[name] = cachedBlock{id: id, block: b.Clone()}
	s.cacheMu.Unlock()
	return b, nil
}

// remember caches the block just written to path, so the next listing does not
// decode what this process wrote itself.
func (s *Store) remember(path string, b ipam.Block) {
	id, err := identify(path)
	if err != nil {
		return // the next read decodes the file
	}
	s.cacheMu.Lock()
	s.parsed[filepath.Base(path)] = cachedBlock{id: id, block: b.Clone()}
	s.cacheMu.Unlock()
}

// identify returns what tells one version of a file from another.
func identify(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); errors.Is(err, unix.ENOENT) {
		return fileID{}, ipam.ErrNotFound
	} else if err != nil {
		return fileID{}, fmt.Errorf("read block: stat %s: %w", path, err)
	}
	return fileID{ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// forgetOnConflict drops the cached copy of a block whose write lost a race, so
// that the retry reads the file.
func (s *Store) forgetOnConflict(cidr netip.Prefix, err error) {
	if errors.Is(err, ipam.ErrConflict) || errors.Is(err, ipam.ErrNotFound) {
		s.cacheMu.Lock()
		delete(s.parsed, filepath.Base(s.path(cidr)))
		s.cacheMu.Unlock()
	}
}

func (s *Store) path(cidr netip.Prefix) string {
	return filepath.Join(s.blocksDir, strings.ReplaceAll(cidr.String(), "/", "_")+".json")
}

// cidrOfName returns the block whose file is name, as path names it.
func cidrOfName(name string) (netip.Prefix, bool) {
	base, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return netip.Prefix{}, false
	}
	i := strings.LastIndexByte(base, '_')
	if i < 0 {
		return netip.Prefix{}, false
	}
	cidr, err := netip.ParsePrefix(base[:i] + "/" + base[i+1:])
	if err != nil || cidr.Masked() != cidr {
		return netip.Prefix{}, false
	}
	return cidr, true
}

// readBlock reads the block file at path; one that is not a whole block
// file for its name is an errDamaged error.
func readBlock(path string) (ipam.Block, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ipam.Block{}, ipam.ErrNotFound
	}
	if err != nil {
		return ipam.Block{}, fmt.Errorf("read block: %w", err)
	}
	return decodeBlock(filepath.Base(path), data)
}

// decodeBlock decodes the content of the block file name.
func decodeBlock(name string, data []byte) (ipam.Block, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return ipam.Block{}, fmt.Errorf("read block %s: %w: %w", name, errDamaged, err)
	}
	if cidr, ok := cidrOfName(name); r.Revision == "" || !ok || r.Block.CIDR != cidr {
		return ipam.Block{}, fmt.Errorf("read block %s: %w: revision %q, block %s", name, errDamaged, r.Revision, r.Block.CIDR)
	}
	r.Block.Revision = r.Revision
	return r.Block, nil
}

// isBlockFile tells whether the directory entry name is a block file.
func isBlockFile(name string) bool {
	return strings.HasSuffix(name, ".json") && !strings.HasPrefix(name, atomicfile.TempPrefix)
}

func wrap(op string, cidr netip.Prefix, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s block %s: %w", op, cidr, err)
}
