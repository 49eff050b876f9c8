// Package imagebuild builds flatnet's container images without a container
// engine: go build (static, -trimpath) for each binary, then one layer of
// those files on an empty base, written with go-containerregistry as a
// docker-archive tarball that `ctr images import`, `docker load` and
// `kind load image-archive` take.
//
// An image is a function of its inputs only: entries sorted, owned by 0:0,
// every timestamp (file times, the config's created) the one given
// (SOURCE_DATE_EPOCH, or 0), so the same files give the same digest on any
// machine. It is a build tool: nothing here is shipped or imported by the
// node's binaries.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one file of an image.
type File struct {
	Path   string      // absolute, in the image
	Mode   fs.FileMode // permission bits
	Source string      // the file on disk to copy
}

// Spec is an image: its files, and how it runs.
type Spec struct {
	Tag        string // the reference it is written under, with its tag
	Entrypoint []string
	Files      []File
	Arch       string // GOARCH of the binaries: amd64, arm64
	Created    time.Time
}

// Image is a built image and its reference.
type Image struct {
	Tag   name.Tag
	Image v1.Image
}

// Build makes the image of spec: one layer on an empty base.
func Build(spec Spec) (Image, error) {
	tag, err := name.NewTag(spec.Tag, name.StrictValidation)
	if err != nil {
		return Image{}, fmt.Errorf("image tag %q: %w", spec.Tag, err)
	}
	if spec.Arch == "" {
		return Image{}, fmt.Errorf("image %s: no architecture", spec.Tag)
	}
	files, err := checkFiles(spec)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", spec.Tag, err)
	}
	layerTar, err := layer(files, spec.Created)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", spec.Tag, err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: layer: %w", spec.Tag, err)
	}
	created := v1.Time{Time: spec.Created.UTC()}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: spec.Arch,
		OS:           "linux",
		Created:      created,
		Config: v1.Config{
			Entrypoint: spec.Entrypoint,
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return Image{}, fmt.Errorf("image %s: config: %w", spec.Tag, err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   l,
		History: v1.History{Created: created, CreatedBy: "flatnet-image"},
	})
	if err != nil {
		return Image{}, fmt.Errorf("image %s: append layer: %w", spec.Tag, err)
	}
	return Image{Tag: tag, Image: img}, nil
}

// checkFiles checks the paths, modes and sources of spec's files and the
// entrypoint, and returns the files sorted by path.
func checkFiles(spec Spec) ([]File, error) {
	if len(spec.Files) == 0 {
		return nil, errors.New("no files")
	}
	files := slices.Clone(spec.Files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for i, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("file path %q: want an absolute, clean path", f.Path)
		}
		if i > 0 && files[i-1].Path == f.Path {
			return nil, fmt.Errorf("file %s: twice", f.Path)
		}
		if f.Mode&^fs.ModePerm != 0 || f.Mode == 0 {
			return nil, fmt.Errorf("file %s: mode %v, want permission bits only", f.Path, f.Mode)
		}
		st, err := os.Stat(f.Source)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("file %s: source %s is not a regular file", f.Path, f.Source)
		}
	}
	if len(spec.Entrypoint) == 0 {
		return nil, errors.New("no entrypoint")
	}
	i, found := slices.BinarySearchFunc(files, spec.Entrypoint[0], func(f File, p string) int { return strings.Compare(f.Path, p) })
	if !found || files[i].Mode&0o111 == 0 {
		return nil, fmt.Errorf("entrypoint %s: not an executable file of the image", spec.Entrypoint[0])
	}
	return files, nil
}

// layer returns the layer's tar: every parent directory (0755) and file,
// sorted, owned by 0:0, with every time at created.
func layer(files []File, created time.Time) ([]byte, error) {
	mtime := time.Unix(created.Unix(), 0)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		rel := strings.TrimPrefix(f.Path, "/")
		var parents []string
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			parents = append(parents, d)
		}
		slices.Reverse(parents)
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
				return nil, fmt.Errorf("layer: %w", err)
			}
		}
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: int64(f.Mode), Size: int64(len(data)), ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img as a docker-archive tarball at path, through a
// temporary file and a rename: a failed write leaves nothing at path.
func WriteArchive(path string, img Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	err = tarball.Write(img.Tag, img.Image, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
