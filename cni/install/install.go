// Package install puts flatnet's CNI plugin, the reference plugins its
// conflist chains and the conflist itself onto a node: what the DaemonSet's
// init container runs as `flatnet-agent install-cni`.
//
// It decides everything before it writes anything: the source conflist must
// parse and name a flatnet plugin, every plugin type it names must be
// installed or already on the node, and a conflist of the same name at the
// destination must be flatnet's (unless Options.Force). Then it stages every
// file that differs as a temporary file next to its destination and renames
// them into place, binaries first and the conflist last, so a runtime never
// sees a half-written file nor a conflist whose plugins are missing. A file
// whose content is already the same is not touched, so a second run changes
// nothing.
//
// It must not remove or replace a file it does not own: the chained
// reference plugins travel under flatnet's own names (flatnet-portmap,
// flatnet-bandwidth), and the plugins in Options.IfMissing (loopback) are
// installed only where the node has none.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// PluginType is the type of flatnet's own plugin in a conflist.
const PluginType = "flatnet"

// Options says what to install where.
type Options struct {
	// SourceDir holds the plugin binaries; each is installed under its own
	// name.
	SourceDir string
	// BinDir is the runtime's CNI plugin directory (the node's /opt/cni/bin).
	BinDir string
	// Conflist is the network configuration list to install; its file name
	// is kept and must end in .conflist.
	Conflist string
	// ConfDir is the runtime's CNI configuration directory (the node's
	// /etc/cni/net.d).
	ConfDir string
	// IfMissing names binaries of SourceDir installed only where BinDir has
	// no file of that name, because the node's own must win: loopback, which
	// the runtime itself calls by that name for every pod's lo.
	IfMissing []string
	// Force replaces a conflist of the same name that is not flatnet's.
	Force bool
}

// Action is what Install did with one file.
type Action string

const (
	Installed Action = "installed" // there was no file of that name
	Replaced  Action = "replaced"  // a different file of that name was replaced
	Unchanged Action = "unchanged" // the file already had this content
	Kept      Action = "kept"      // the node's own file was left in place (IfMissing)
)

// Change is one file Install looked at.
type Change struct {
	Path   string
	Action Action
}

// file is one file to put in place.
type file struct {
	src    string // a path to copy from, or
	data   []byte // the content itself (the conflist)
	dst    string
	mode   fs.FileMode
	action Action
	tmp    string // the staged temporary file, once written
}

// Install installs the binaries of opts.SourceDir into opts.BinDir and the
// conflist opts.Conflist into opts.ConfDir, and reports what it did with
// each file, in that order. On error nothing has been written, except when
// a rename fails after others succeeded (each file is then either the old
// or the new one, never a mix of both).
func Install(opts Options, log *slog.Logger) ([]Change, error) {
	files, err := plan(opts, log)
	if err != nil {
		return nil, err
	}
	var todo []*file
	for _, f := range files {
		if f.action == Installed || f.action == Replaced {
			todo = append(todo, f)
		}
	}
	removeStale(files, log)
	if err := stage(todo); err != nil {
		return nil, err
	}
	if err := commit(todo); err != nil {
		return nil, err
	}
	changes := make([]Change, 0, len(files))
	for _, f := range files {
		changes = append(changes, Change{Path: f.dst, Action: f.action})
		if f.action == Kept {
			log.Info("cni file kept: the node has its own, and it is installed only where missing", "file", f.dst)
			continue
		}
		log.Info("cni file "+string(f.action), "file", f.dst)
	}
	return changes, nil
}

// plan reads and checks everything and decides the action for each file,
// writing nothing.
func plan(opts Options, log *slog.Logger) ([]*file, error) {
	for _, d := range []struct{ flag, dir string }{{"source dir", opts.SourceDir}, {"bin dir", opts.BinDir}, {"conf dir", opts.ConfDir}} {
		if d.dir == "" {
			return nil, fmt.Errorf("%s: not set", d.flag)
		}
		st, err := os.Stat(d.dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.flag, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%s %s: not a directory", d.flag, d.dir)
		}
	}

	binaries, err := sourceBinaries(opts.SourceDir)
	if err != nil {
		return nil, err
	}
	conf, err := readConflist(opts.Conflist)
	if err != nil {
		return nil, err
	}
	for _, p := range conf.list.Plugins {
		typ := p.Network.Type
		if _, ok := binaries[typ]; ok {
			continue
		}
		if st, err := os.Stat(filepath.Join(opts.BinDir, typ)); err == nil && st.Mode().IsRegular() {
			continue
		}
		return nil, fmt.Errorf("conflist %s: plugin type %q is neither in %s nor in %s", opts.Conflist, typ, opts.SourceDir, opts.BinDir)
	}

	var files []*file
	for _, name := range slices.Sorted(maps.Keys(binaries)) {
		f := &file{src: binaries[name], dst: filepath.Join(opts.BinDir, name), mode: 0o755}
		if slices.Contains(opts.IfMissing, name) {
			if _, err := os.Lstat(f.dst); err == nil {
				f.action = Kept
				files = append(files, f)
				continue
			}
		}
		if f.action, err = compareFile(f.src, f.dst); err != nil {
			return nil, err
		}
		files = append(files, f)
	}

	f := &file{data: conf.data, dst: filepath.Join(opts.ConfDir, filepath.Base(opts.Conflist)), mode: 0o644}
	existing, err := os.ReadFile(f.dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.action = Installed
	case err != nil:
		return nil, fmt.Errorf("read installed conflist: %w", err)
	case bytes.Equal(existing, f.data):
		f.action = Unchanged
	default:
		if why := notFlatnets(existing, conf.list.Name); why != "" && !opts.Force {
			return nil, fmt.Errorf("refusing to replace %s: it is not flatnet's (%s); --force replaces it", f.dst, why)
		}
		f.action = Replaced
	}
	files = append(files, f)
	warnShadowed(opts.ConfDir, filepath.Base(f.dst), log)
	return files, nil
}

// sourceBinaries returns the regular files of dir by name.
func sourceBinaries(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read source dir: %w", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		st, err := os.Stat(path) // follows symlinks, as a ConfigMap's are
		if err != nil {
			return nil, fmt.Errorf("source binary: %w", err)
		}
		if st.Mode().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			out[e.Name()] = path
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("source dir %s: no plugin binaries", dir)
	}
	return out, nil
}

// conflist is the source conflist: the bytes to install and what they say.
type conflist struct {
	data []byte
	list *libcni.NetworkConfigList
}

// readConflist reads and checks the conflist to install. Its installed form
// is the file with exactly one trailing newline.
func readConflist(path string) (conflist, error) {
	if path == "" {
		return conflist{}, errors.New("conflist: not set")
	}
	if filepath.Ext(path) != ".conflist" {
		return conflist{}, fmt.Errorf("conflist %s: the name must end in .conflist", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return conflist{}, fmt.Errorf("read conflist: %w", err)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return conflist{}, fmt.Errorf("conflist %s: %w", path, err)
	}
	switch {
	case list.Name == "":
		return conflist{}, fmt.Errorf("conflist %s: no network name", path)
	case list.CNIVersion == "":
		return conflist{}, fmt.Errorf("conflist %s: no cniVersion", path)
	case !hasFlatnet(list):
		return conflist{}, fmt.Errorf("conflist %s: no plugin of type %s", path, PluginType)
	}
	return conflist{data: append(bytes.TrimRight(data, " \t\r\n"), '\n'), list: list}, nil
}

func hasFlatnet(list *libcni.NetworkConfigList) bool {
	return slices.ContainsFunc(list.Plugins, func(p *libcni.PluginConfig) bool { return p.Network.Type == PluginType })
}

// notFlatnets says why an installed conflist is not flatnet's network
// called name, or "" if it is.
func notFlatnets(data []byte, name string) string {
	list, err := libcni.ConfListFromBytes(data)
	switch {
	case err != nil:
		return "it does not parse: " + err.Error()
	case list.Name != name:
		return fmt.Sprintf("its network is %q, not %q", list.Name, name)
	case !hasFlatnet(list):
		return "it has no plugin of type " + PluginType
	}
	return ""
}

// warnShadowed warns about network configurations that sort before ours:
// runtimes use the first one in name order.
func warnShadowed(dir, ours string, log *slog.Logger) {
	confs, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return
	}
	for _, c := range confs {
		if filepath.Base(c) < ours {
			log.Warn("another network configuration sorts before flatnet's: the runtime uses the first", "file", c)
		}
	}
}

// compareFile says whether dst must be written to have src's content and be
// executable.
func compareFile(src, dst string) (Action, error) {
	dstInfo, err := os.Stat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return Installed, nil
	}
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", dst, err)
	}
	srcInfo, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("source binary: %w", err)
	}
	if !dstInfo.Mode().IsRegular() || dstInfo.Size() != srcInfo.Size() || dstInfo.Mode().Perm() != 0o755 {
		return Replaced, nil
	}
	same, err := sameContent(src, dst)
	if err != nil {
		return "", err
	}
	if same {
		return Unchanged, nil
	}
	return Replaced, nil
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, fmt.Errorf("source binary: %w", err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, fmt.Errorf("installed binary: %w", err)
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 1<<16), make([]byte, 1<<16)
	for {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		doneA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		doneB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		switch {
		case errA != nil && !doneA:
			return false, fmt.Errorf("source binary %s: %w", a, errA)
		case errB != nil && !doneB:
			return false, fmt.Errorf("installed binary %s: %w", b, errB)
		case doneA || doneB:
			return doneA && doneB, nil
		}
	}
}
