package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// sources writes files into a directory of t's and returns the spec of an
// image holding them.
func sources(t *testing.T, files map[string]string) Spec {
	t.Helper()
	dir := t.TempDir()
	spec := Spec{Tag: "example.org/test/image:v1", Entrypoint: []string{"/usr/local/bin/app"}, Arch: "amd64", Created: time.Unix(0, 0)}
	for path, content := range files {
		src := filepath.Join(dir, strings.ReplaceAll(path, "/", "_"))
		if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		mode := fs.FileMode(0o644)
		if strings.Contains(path, "/bin/") {
			mode = 0o755
		}
		spec.Files = append(spec.Files, File{Path: path, Mode: mode, Source: src})
	}
	return spec
}

var appFiles = map[string]string{
	"/usr/local/bin/app":   "the app",
	"/usr/local/bin/tool":  "a tool",
	"/opt/app/cni/plugin":  "a plugin",
	"/etc/app/config.yaml": "key: value\n",
}

func write(t *testing.T, spec Spec) (Built, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.tar")
	b, err := WriteImage(spec, path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, data
}

// The same files, wherever they are on disk and in whatever order they are
// given, make the same image, byte for byte; any change of content or time
// makes another.
func TestReproducible(t *testing.T) {
	first, firstArchive := write(t, sources(t, appFiles))
	again := sources(t, appFiles) // other source paths, other map order
	for i, j := 0, len(again.Files)-1; i < j; i, j = i+1, j-1 {
		again.Files[i], again.Files[j] = again.Files[j], again.Files[i]
	}
	second, secondArchive := write(t, again)
	if first.Digest != second.Digest || first.ImageID != second.ImageID {
		t.Errorf("same inputs, different images: %s/%s and %s/%s", first.Digest, first.ImageID, second.Digest, second.ImageID)
	}
	if !bytes.Equal(firstArchive, secondArchive) {
		t.Error("same inputs, different archive bytes")
	}

	changed := map[string]string{}
	for k, v := range appFiles {
		changed[k] = v
	}
	changed["/usr/local/bin/tool"] = "a toot"
	if b, _ := write(t, sources(t, changed)); b.Digest == first.Digest {
		t.Error("a changed byte left the digest as it was")
	}
	later := sources(t, appFiles)
	later.Created = time.Unix(1700000000, 0)
	if b, _ := write(t, later); b.Digest == first.Digest {
		t.Error("another creation time left the digest as it was")
	}
}

// The archive reads back as the image: tag, config, and one layer whose
// entries are sorted, owned by root, timed at the creation time, with the
// parent directories and the modes asked for.
func TestArchiveContent(t *testing.T) {
	spec := sources(t, appFiles)
	spec.Created = time.Unix(1700000000, 0)
	b, _ := write(t, spec)
	img := readArchive(t, b)

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || !cfg.Created.Equal(spec.Created) ||
		!cmp.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/app"}) {
		t.Errorf("config: os %s arch %s created %v entrypoint %v", cfg.OS, cfg.Architecture, cfg.Created, cfg.Config.Entrypoint)
	}
	got := entries(t, img, spec.Created)
	want := []string{
		"etc/ dir 755", "etc/app/ dir 755", "etc/app/config.yaml 644 key: value\n",
		"opt/ dir 755", "opt/app/ dir 755", "opt/app/cni/ dir 755", "opt/app/cni/plugin 644 a plugin",
		"usr/ dir 755", "usr/local/ dir 755", "usr/local/bin/ dir 755", "usr/local/bin/app 755 the app", "usr/local/bin/tool 755 a tool",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("layer entries (-want +got):\n%s", d)
	}
}

// readArchive reads the image of b's tag back from its archive.
func readArchive(t *testing.T, b Built) v1.Image {
	t.Helper()
	tag, err := name.NewTag(b.Tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(b.Archive, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := img.ConfigName(); id != b.ImageID {
		t.Errorf("archive's image ID %s, want %s", id, b.ImageID)
	}
	return img
}

// entries lists the single layer of img as "name mode content" (or "name
// dir mode"), checking owner and time on the way.
func entries(t *testing.T, img v1.Image, created time.Time) []string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
			t.Errorf("%s: owner %d:%d, time %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if h.Typeflag == tar.TypeDir {
			out = append(out, h.Name+" dir "+modeString(h.Mode))
			continue
		}
		data, _ := io.ReadAll(tr)
		out = append(out, h.Name+" "+modeString(h.Mode)+" "+string(data))
	}
	return out
}

func modeString(m int64) string { return fmt.Sprintf("%o", m) }

// A spec that cannot be an image is an error that says why, and no archive
// is written.
func TestBadSpec(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*Spec)
		want   string
	}{
		{"no tag", func(s *Spec) { s.Tag = "example.org/test/image" }, "image tag"},
		{"bad tag", func(s *Spec) { s.Tag = "Example.org/UPPER:v1" }, "image tag"},
		{"no arch", func(s *Spec) { s.Arch = "" }, "no architecture"},
		{"no files", func(s *Spec) { s.Files = nil }, "no files"},
		{"relative path", func(s *Spec) { s.Files[0].Path = "usr/bin/x" }, "want an absolute, clean path"},
		{"unclean path", func(s *Spec) { s.Files[0].Path = "/usr/../x" }, "want an absolute, clean path"},
		{"twice", func(s *Spec) { s.Files[1].Path = s.Files[0].Path }, "twice"},
		{"setuid", func(s *Spec) { s.Files[0].Mode = 0o755 | fs.ModeSetuid }, "permission bits only"},
		{"missing source", func(s *Spec) { s.Files[0].Source += ".gone" }, "no such file"},
		{"directory source", func(s *Spec) { s.Files[0].Source = filepath.Dir(s.Files[0].Source) }, "not a regular file"},
		{"no entrypoint", func(s *Spec) { s.Entrypoint = nil }, "no entrypoint"},
		{"entrypoint missing", func(s *Spec) { s.Entrypoint = []string{"/bin/sh"} }, "entrypoint /bin/sh: not an executable file"},
		{"entrypoint not executable", func(s *Spec) { s.Entrypoint = []string{"/etc/app/config.yaml"} }, "not an executable file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := sources(t, appFiles)
			c.change(&spec)
			path := filepath.Join(t.TempDir(), "image.tar")
			_, err := WriteImage(spec, path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("WriteImage: %v, want an error containing %q", err, c.want)
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
				t.Errorf("files written: %v", entries)
			}
		})
	}
}

// A failed write leaves no archive and no temporary file.
func TestWriteArchiveFails(t *testing.T) {
	img, err := Build(sources(t, appFiles))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The destination is a non-empty directory: the rename fails last.
	path := filepath.Join(dir, "image.tar")
	if err := os.MkdirAll(filepath.Join(path, "occupied"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(path, img); err == nil {
		t.Fatal("WriteArchive over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "image.tar" {
		t.Errorf("left in the directory: %v", entries)
	}
}

func TestCreatedFromEnv(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if c, err := CreatedFromEnv(); err != nil || c.Unix() != 0 {
		t.Errorf("unset: %v %v", c, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if c, err := CreatedFromEnv(); err != nil || c.Unix() != 1700000000 {
		t.Errorf("1700000000: %v %v", c, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := CreatedFromEnv(); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("yesterday: %v", err)
	}
}
