package install

import (
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const flatnetConflist = `{
  "cniVersion": "1.0.0",
  "name": "flatnet",
  "plugins": [
    {"type": "flatnet"},
    {"type": "flatnet-portmap", "capabilities": {"portMappings": true}},
    {"type": "flatnet-bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
`

// node is a source directory like the image's and a node's two CNI
// directories, all empty but for the sources.
type node struct {
	opts Options
}

func newNode(t *testing.T) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{opts: Options{
		SourceDir: filepath.Join(root, "src"),
		BinDir:    filepath.Join(root, "opt/cni/bin"),
		Conflist:  filepath.Join(root, "conf/10-flatnet.conflist"),
		ConfDir:   filepath.Join(root, "etc/cni/net.d"),
		IfMissing: []string{"loopback"},
	}}
	for _, d := range []string{n.opts.SourceDir, n.opts.BinDir, n.opts.ConfDir, filepath.Dir(n.opts.Conflist)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"flatnet", "flatnet-portmap", "flatnet-bandwidth", "loopback"} {
		n.writeSource(t, b, "binary "+b)
	}
	write(t, n.opts.Conflist, flatnetConflist, 0o644)
	return n
}

func (n *node) writeSource(t *testing.T, name, content string) {
	t.Helper()
	write(t, filepath.Join(n.opts.SourceDir, name), content, 0o755)
}

func write(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func (n *node) install(t *testing.T) ([]Change, error) {
	t.Helper()
	return Install(n.opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func (n *node) mustInstall(t *testing.T) map[string]Action {
	t.Helper()
	changes, err := n.install(t)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	out := map[string]Action{}
	for _, c := range changes {
		rel, _ := filepath.Rel(filepath.Dir(filepath.Dir(filepath.Dir(n.opts.BinDir))), c.Path)
		out[rel] = c.Action
	}
	return out
}

// snapshot is every file of the node's two directories: content, mode,
// inode and modification time, so that "nothing changed" means exactly that.
func (n *node) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{n.opts.BinDir, n.opts.ConfDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(p)
			out[filepath.Base(dir)+"/"+e.Name()] = fmt.Sprintf("%q mode %o inode %d mtime %d.%09d", data, st.Mode&0o7777, st.Ino, st.Mtim.Sec, st.Mtim.Nsec)
		}
	}
	return out
}

func TestFreshInstall(t *testing.T) {
	n := newNode(t)
	got := n.mustInstall(t)
	want := map[string]Action{
		"opt/cni/bin/flatnet":               Installed,
		"opt/cni/bin/flatnet-bandwidth":     Installed,
		"opt/cni/bin/flatnet-portmap":       Installed,
		"opt/cni/bin/loopback":              Installed,
		"etc/cni/net.d/10-flatnet.conflist": Installed,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("actions (-want +got):\n%s", d)
	}
	for _, b := range []string{"flatnet", "flatnet-portmap", "flatnet-bandwidth", "loopback"} {
		checkFile(t, filepath.Join(n.opts.BinDir, b), "binary "+b, 0o755)
	}
	checkFile(t, filepath.Join(n.opts.ConfDir, "10-flatnet.conflist"), flatnetConflist, 0o644)
	checkNoTemp(t, n)
}

func checkFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != content {
		t.Errorf("%s: %q, want %q", path, data, content)
	}
	st, _ := os.Stat(path)
	if st.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
	}
}

func checkNoTemp(t *testing.T, n *node) {
	t.Helper()
	for _, dir := range []string{n.opts.BinDir, n.opts.ConfDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Errorf("temporary file %s left in %s", e.Name(), dir)
			}
		}
	}
}

// A second run with the same files writes nothing: same inodes, same
// modification times.
func TestRerunChangesNothing(t *testing.T) {
	n := newNode(t)
	n.mustInstall(t)
	before := n.snapshot(t)
	got := n.mustInstall(t)
	for path, a := range got {
		want := Unchanged
		if strings.HasSuffix(path, "/loopback") {
			want = Kept // it is there now, so it is the node's
		}
		if a != want {
			t.Errorf("%s: %s on the second run, want %s", path, a, want)
		}
	}
	if d := cmp.Diff(before, n.snapshot(t)); d != "" {
		t.Errorf("the second run changed files (-before +after):\n%s", d)
	}
}

// A changed binary or conflist replaces the installed one (a new inode: it
// was renamed over it); the rest stays as it was.
func TestUpdate(t *testing.T) {
	n := newNode(t)
	n.mustInstall(t)
	n.writeSource(t, "flatnet", "binary flatnet, newer")
	write(t, n.opts.Conflist, strings.Replace(flatnetConflist, "1.0.0", "0.4.0", 1), 0o644)
	got := n.mustInstall(t)
	if got["opt/cni/bin/flatnet"] != Replaced || got["etc/cni/net.d/10-flatnet.conflist"] != Replaced || got["opt/cni/bin/flatnet-portmap"] != Unchanged {
		t.Errorf("actions %v", got)
	}
	checkFile(t, filepath.Join(n.opts.BinDir, "flatnet"), "binary flatnet, newer", 0o755)
	checkFile(t, filepath.Join(n.opts.ConfDir, "10-flatnet.conflist"), strings.Replace(flatnetConflist, "1.0.0", "0.4.0", 1), 0o644)
	checkNoTemp(t, n)
}

// The node's own loopback and portmap stay: flatnet's chain uses its own
// names, and loopback only where the node has none.
func TestNodesPluginsKept(t *testing.T) {
	n := newNode(t)
	write(t, filepath.Join(n.opts.BinDir, "loopback"), "the node's loopback", 0o755)
	write(t, filepath.Join(n.opts.BinDir, "portmap"), "the node's portmap", 0o755)
	got := n.mustInstall(t)
	if got["opt/cni/bin/loopback"] != Kept {
		t.Errorf("loopback: %s, want kept", got["opt/cni/bin/loopback"])
	}
	checkFile(t, filepath.Join(n.opts.BinDir, "loopback"), "the node's loopback", 0o755)
	checkFile(t, filepath.Join(n.opts.BinDir, "portmap"), "the node's portmap", 0o755)
	checkFile(t, filepath.Join(n.opts.BinDir, "flatnet-portmap"), "binary flatnet-portmap", 0o755)
}

// A binary of flatnet's with the right content but not executable is
// installed again.
func TestNotExecutableReplaced(t *testing.T) {
	n := newNode(t)
	n.mustInstall(t)
	if err := os.Chmod(filepath.Join(n.opts.BinDir, "flatnet"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := n.mustInstall(t); got["opt/cni/bin/flatnet"] != Replaced {
		t.Errorf("flatnet: %s, want replaced", got["opt/cni/bin/flatnet"])
	}
	checkFile(t, filepath.Join(n.opts.BinDir, "flatnet"), "binary flatnet", 0o755)
}

// A conflist of the same name that is not flatnet's is refused, and nothing
// is written; --force replaces it.
func TestForeignConflist(t *testing.T) {
	for name, foreign := range map[string]string{
		"other network":  `{"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "flatnet"}]}`,
		"no flatnet":     `{"cniVersion": "1.0.0", "name": "flatnet", "plugins": [{"type": "bridge"}]}`,
		"does not parse": `{"cniVersion": `,
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t)
			dst := filepath.Join(n.opts.ConfDir, "10-flatnet.conflist")
			write(t, dst, foreign, 0o644)
			before := n.snapshot(t)
			_, err := n.install(t)
			if err == nil || !strings.Contains(err.Error(), "refusing to replace "+dst+": it is not flatnet's") || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("install over a foreign conflist: %v, want a refusal", err)
			}
			if d := cmp.Diff(before, n.snapshot(t)); d != "" {
				t.Errorf("a refused install changed files (-before +after):\n%s", d)
			}
			n.opts.Force = true
			if got := n.mustInstall(t); got["etc/cni/net.d/10-flatnet.conflist"] != Replaced {
				t.Errorf("with --force: %v", got)
			}
			checkFile(t, dst, flatnetConflist, 0o644)
		})
	}
}

// Bad input is an error that says what is wrong, and nothing is written.
func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(t *testing.T, n *node)
		want   string
	}{
		{"conflist not JSON", func(t *testing.T, n *node) { write(t, n.opts.Conflist, "{", 0o644) }, "error parsing configuration list"},
		{"conflist without name", func(t *testing.T, n *node) {
			write(t, n.opts.Conflist, `{"cniVersion": "1.0.0", "plugins": [{"type": "flatnet"}]}`, 0o644)
		}, "no name"},
		{"conflist without version", func(t *testing.T, n *node) {
			write(t, n.opts.Conflist, `{"name": "flatnet", "plugins": [{"type": "flatnet"}]}`, 0o644)
		}, "no cniVersion"},
		{"conflist without flatnet", func(t *testing.T, n *node) {
			write(t, n.opts.Conflist, `{"cniVersion": "1.0.0", "name": "flatnet", "plugins": [{"type": "flatnet-portmap"}]}`, 0o644)
		}, "no plugin of type flatnet"},
		{"plugin nowhere", func(t *testing.T, n *node) {
			write(t, n.opts.Conflist, `{"cniVersion": "1.0.0", "name": "flatnet", "plugins": [{"type": "flatnet"}, {"type": "tuning"}]}`, 0o644)
		}, `plugin type "tuning" is neither in`},
		{"conflist missing", func(t *testing.T, n *node) { n.opts.Conflist = filepath.Join(t.TempDir(), "10-flatnet.conflist") }, "no such file"},
		{"conflist misnamed", func(t *testing.T, n *node) { n.opts.Conflist += ".json" }, "must end in .conflist"},
		{"source dir missing", func(t *testing.T, n *node) { n.opts.SourceDir = filepath.Join(t.TempDir(), "none") }, "source dir: stat"},
		{"source dir empty", func(t *testing.T, n *node) { n.opts.SourceDir = t.TempDir() }, "no plugin binaries"},
		{"bin dir missing", func(t *testing.T, n *node) { n.opts.BinDir = filepath.Join(t.TempDir(), "none") }, "bin dir: stat"},
		{"conf dir a file", func(t *testing.T, n *node) { n.opts.ConfDir = n.opts.Conflist }, "not a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t)
			binDir, confDir := n.opts.BinDir, n.opts.ConfDir
			c.change(t, n)
			_, err := n.install(t)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("install: %v, want an error containing %q", err, c.want)
			}
			for _, d := range []string{binDir, confDir} {
				if entries, _ := os.ReadDir(d); len(entries) != 0 {
					t.Errorf("%s after a failed install: %v", d, entries)
				}
			}
		})
	}
}

// A source binary that cannot be read fails the install after others were
// staged: no temporary file stays, and nothing is installed.
func TestUnreadableSource(t *testing.T) {
	n := newNode(t)
	// Reading /proc/self/mem at offset 0 fails (EIO) even for root, while
	// opening and stat-ing it work: a binary whose read fails half-way.
	if err := os.Symlink("/proc/self/mem", filepath.Join(n.opts.SourceDir, "zz-unreadable")); err != nil {
		t.Fatal(err)
	}
	_, err := n.install(t)
	if err == nil || !strings.Contains(err.Error(), "stage "+filepath.Join(n.opts.BinDir, "zz-unreadable")) {
		t.Fatalf("install: %v, want a staging error for zz-unreadable", err)
	}
	for _, d := range []string{n.opts.BinDir, n.opts.ConfDir} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s after a failed install: %v", d, entries)
		}
	}
}

// Temporary files an interrupted run left are removed by the next.
func TestStaleTempRemoved(t *testing.T) {
	n := newNode(t)
	stale := filepath.Join(n.opts.BinDir, ".flatnet.123456.tmp")
	write(t, stale, "half a binary", 0o600)
	n.mustInstall(t)
	if _, err := os.Stat(stale); err == nil {
		t.Error("the stale temporary file is still there")
	}
	checkNoTemp(t, n)
}

// The installed conflist has exactly one trailing newline, whatever the
// source has, so that the newline can be appended last (see commit).
func TestConflistNewline(t *testing.T) {
	n := newNode(t)
	write(t, n.opts.Conflist, strings.TrimSpace(flatnetConflist), 0o644)
	n.mustInstall(t)
	checkFile(t, filepath.Join(n.opts.ConfDir, "10-flatnet.conflist"), flatnetConflist, 0o644)
	write(t, n.opts.Conflist, flatnetConflist+"\n\n", 0o644)
	if got := n.mustInstall(t); got["etc/cni/net.d/10-flatnet.conflist"] != Unchanged {
		t.Errorf("conflist with more trailing newlines: %v, want unchanged", got)
	}
}
