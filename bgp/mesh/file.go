package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/flatnet-io/flatnet/internal/atomicfile"
)

// FileRegistry is a Registry in a directory shared by the nodes on one host
// (the lab, a single machine): one JSON file per node, replaced atomically.
// Watch polls the directory.
type FileRegistry struct {
	dir  string
	poll time.Duration
	log  *slog.Logger
}

// DefaultPoll is how often FileRegistry.Watch looks for changes.
const DefaultPoll = 250 * time.Millisecond

// NewFileRegistry keeps the registry in dir (created if missing), polling every
// poll (0 means DefaultPoll).
func NewFileRegistry(dir string, poll time.Duration, log *slog.Logger) (*FileRegistry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("node registry: %w", err)
	}
	if poll <= 0 {
		poll = DefaultPoll
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FileRegistry{dir: dir, poll: poll, log: log}, nil
}

var _ Registry = (*FileRegistry)(nil)

func (r *FileRegistry) path(name string) string { return filepath.Join(r.dir, name+".json") }

// Register writes n's record through a temporary file and a rename, so a
// reader sees the old record or the new one, never a torn one.
func (r *FileRegistry) Register(_ context.Context, n Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	if strings.ContainsAny(n.Name, `/\`) || strings.HasPrefix(n.Name, ".") {
		return fmt.Errorf("mesh node %q: not a usable file name", n.Name)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(r.path(n.Name), b, false); err != nil {
		return fmt.Errorf("register node %s: %w", n.Name, err)
	}
	return nil
}

// List returns the registered nodes sorted by name. A record that cannot be
// read or is invalid is logged and left out.
func (r *FileRegistry) List() ([]Node, error) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var nodes []Node
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deregistered meanwhile
		}
		var n Node
		if err == nil {
			err = json.Unmarshal(b, &n)
		}
		if err == nil {
			err = n.Validate()
		}
		if err == nil && n.Name != name {
			err = fmt.Errorf("record names node %q", n.Name)
		}
		if err != nil {
			r.log.Warn("ignoring node record", "file", e.Name(), "err", err)
			continue
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Watch polls the directory and calls fn when the set of nodes changes.
func (r *FileRegistry) Watch(ctx context.Context, fn func([]Node)) {
	var last []Node
	first := true
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		nodes, err := r.List()
		if err != nil {
			r.log.Warn("watch nodes", "err", err)
		} else if first || !slices.Equal(nodes, last) {
			fn(slices.Clone(nodes))
			last, first = nodes, false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
