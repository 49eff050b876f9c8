package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResolve finds a topology by path, by its directory and by name, and
// on a miss lists the names there are.
func TestResolve(t *testing.T) {
	dir := filepath.Join("..", "..", "test", "topologies")
	file := filepath.Join(dir, "rack-pair", "rack-pair.clab.yml")
	empty := t.TempDir()
	tests := []struct {
		arg  string
		dirs []string
		want string // the path, or a part of the error
		err  bool
	}{
		{arg: file, want: file},
		{arg: file, dirs: []string{empty}, want: file},
		{arg: filepath.Join(dir, "rack-pair"), want: file},
		{arg: "rack-pair", dirs: []string{empty, dir}, want: file},
		{arg: "rack-pair", err: true, want: `topology "rack-pair": no such file`},
		{arg: "rack", dirs: []string{dir}, err: true, want: "nor a topology of that name in " + dir + "; there are: kubelet-tor, rack-pair, three-node-mesh, two-node-tor, two-node-tor-bird"},
		{arg: "rack-pair", dirs: []string{empty}, err: true, want: "and no topologies in " + empty},
		{arg: "../rack-pair", dirs: []string{dir}, err: true, want: "there are: kubelet-tor, rack-pair,"},
		{arg: dir, dirs: []string{dir}, err: true, want: "a directory without topologies.clab.yml"},
		{arg: "", dirs: []string{dir}, err: true, want: "no topology given"},
	}
	for _, tt := range tests {
		got, err := Resolve(tt.arg, tt.dirs...)
		switch {
		case tt.err && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Resolve(%q, %q) = %q, %v; want an error with %q", tt.arg, tt.dirs, got, err, tt.want)
		case !tt.err && (err != nil || got != tt.want):
			t.Errorf("Resolve(%q, %q) = %q, %v; want %q", tt.arg, tt.dirs, got, err, tt.want)
		}
	}
}

// TestNames lists only directories that hold a file named after them.
func TestNames(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a/a.clab.yml", "b/other.clab.yml", "c.clab.yml"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := Names(dir); len(got) != 1 || got[0] != "a" {
		t.Errorf("Names = %q, want [a]", got)
	}
}
