package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Binary is a Go main package built into an image.
type Binary struct {
	Package string // import path, or ./path in the flatnet module
	Path    string // in the image
	LDFlags string // besides -s -w: the version stamp
	// Module, when set, is the directory (relative to the flatnet module's)
	// of another module the package is built in: one that pins
	// dependencies flatnet must not inherit (CoreDNS).
	Module string
}

// Layout is one of the images `make image` builds.
type Layout struct {
	Name       string // of its archive, <Name>.tar
	Tag        string
	Entrypoint []string
	Binaries   []Binary
}

// Repository is where flatnet's images are published; deploy/kustomization.yaml
// names ghcr.io/flatnet-io/flatnet.
const Repository = "ghcr.io/flatnet-io"

// PluginsModule provides the reference plugins the conflist chains, at the
// version the flatnet module requires (go.mod lists them as tools).
const PluginsModule = "github.com/containernetworking/plugins"

// CNIDir is where the flatnet image keeps the CNI plugins that
// `flatnet-agent install-cni` copies to the node.
const CNIDir = "/opt/flatnet/cni"

// Layouts are the images of a release: flatnet (agent, flatnetctl, the CNI
// plugin and the reference plugins under flatnet's names), and the two the
// lab runs, a pause image for pod sandboxes and an echo server. version
// stamps flatnet's binaries and tags flatnet's images; pluginsVersion stamps
// the reference plugins.
func Layouts(version, pluginsVersion string) []Layout {
	stamp := "-X main.version=" + version
	pluginStamp := "-X " + PluginsModule + "/pkg/utils/buildversion.BuildVersion=" + pluginsVersion
	return []Layout{
		{
			Name:       "flatnet",
			Tag:        Repository + "/flatnet:" + version,
			Entrypoint: []string{"/usr/local/bin/flatnet-agent"},
			Binaries: []Binary{
				{Package: "./cmd/flatnet-agent", Path: "/usr/local/bin/flatnet-agent", LDFlags: stamp},
				{Package: "./cmd/flatnetctl", Path: "/usr/local/bin/flatnetctl", LDFlags: stamp},
				{Package: "./cmd/flatnet", Path: CNIDir + "/flatnet", LDFlags: stamp},
				// Under flatnet's names, so that they never replace, nor
				// depend on, the node's own portmap and bandwidth
				// (docs/install.md); the plugins ignore their file name.
				{Package: PluginsModule + "/plugins/meta/portmap", Path: CNIDir + "/flatnet-portmap", LDFlags: pluginStamp},
				{Package: PluginsModule + "/plugins/meta/bandwidth", Path: CNIDir + "/flatnet-bandwidth", LDFlags: pluginStamp},
				// The runtime calls loopback by that name: install-cni
				// installs it only where the node has none.
				{Package: PluginsModule + "/plugins/main/loopback", Path: CNIDir + "/loopback", LDFlags: pluginStamp},
			},
		},
		{
			Name:       "pause",
			Tag:        "registry.k8s.io/pause:3.10",
			Entrypoint: []string{"/pause"},
			Binaries:   []Binary{{Package: "./lab/images/pause", Path: "/pause", LDFlags: stamp}},
		},
		{
			Name:       "echo",
			Tag:        Repository + "/flatnet-echo:" + version,
			Entrypoint: []string{"/echo"},
			Binaries:   []Binary{{Package: "./lab/images/echo", Path: "/echo", LDFlags: stamp}},
		},
		{
			// The cluster DNS of the lab's real nodes: upstream CoreDNS with
			// the plugins a cluster.local server uses (test/kube/coredns).
			Name:       "coredns",
			Tag:        Repository + "/lab-coredns:" + CoreDNSVersion,
			Entrypoint: []string{"/coredns"},
			Binaries:   []Binary{{Package: "./cmd/coredns", Module: "test/kube/coredns", Path: "/coredns"}},
		},
	}
}

// CoreDNSVersion is the CoreDNS release test/kube/coredns requires; it tags
// the lab's CoreDNS image.
const CoreDNSVersion = "v1.15.0"

// Toolchain runs the go command in the flatnet module.
type Toolchain struct {
	Go        string // the go command
	ModuleDir string // the flatnet module's root
	Arch      string // GOARCH to build for
}

// ModuleVersion returns the version of module the flatnet module requires.
func (tc Toolchain) ModuleVersion(ctx context.Context, module string) (string, error) {
	out, err := tc.run(ctx, nil, "list", "-m", "-f", "{{.Version}}", module)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Compile builds layout's binaries into dir, each at its path in the image,
// static (CGO_ENABLED=0), with -trimpath and without VCS stamping, so that
// the binaries depend only on the sources, the toolchain and the version.
// It returns the image's spec.
func (tc Toolchain) Compile(ctx context.Context, layout Layout, dir string, created time.Time) (Spec, error) {
	spec := Spec{Tag: layout.Tag, Entrypoint: layout.Entrypoint, Arch: tc.Arch, Created: created}
	for _, b := range layout.Binaries {
		out := filepath.Join(dir, filepath.FromSlash(b.Path))
		env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + tc.Arch}
		run := tc
		if b.Module != "" {
			run.ModuleDir = filepath.Join(tc.ModuleDir, b.Module)
		}
		if _, err := run.run(ctx, env, "build", "-trimpath", "-buildvcs=false", "-ldflags", strings.TrimSpace("-s -w "+b.LDFlags), "-o", out, b.Package); err != nil {
			return Spec{}, fmt.Errorf("image %s: %w", layout.Name, err)
		}
		spec.Files = append(spec.Files, File{Path: b.Path, Mode: 0o755, Source: out})
	}
	return spec, nil
}

func (tc Toolchain) run(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, tc.Go, args...)
	cmd.Dir = tc.ModuleDir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", tc.Go, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Built is an image written as an archive.
type Built struct {
	Tag     string
	Digest  v1.Hash // of the manifest
	ImageID v1.Hash // the config's digest, as docker load reports it
	Archive string
}

// BuildArchives compiles and writes the named layouts (all when names is
// empty) as <outDir>/<name>.tar, each image stamped with version and every
// time at created. The binaries are compiled in a directory of outDir's,
// removed afterwards; a failure leaves no archive half-written.
func (tc Toolchain) BuildArchives(ctx context.Context, version, outDir string, created time.Time, names []string) ([]Built, error) {
	if version == "" {
		return nil, errors.New("no version")
	}
	pluginsVersion, err := tc.ModuleVersion(ctx, PluginsModule)
	if err != nil {
		return nil, err
	}
	layouts := Layouts(version, pluginsVersion)
	for _, n := range names {
		if !slices.ContainsFunc(layouts, func(l Layout) bool { return l.Name == n }) {
			return nil, fmt.Errorf("image %q: not one of flatnet, pause, echo, coredns", n)
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(outDir, ".stage-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)

	var built []Built
	for _, l := range layouts {
		if len(names) > 0 && !slices.Contains(names, l.Name) {
			continue
		}
		spec, err := tc.Compile(ctx, l, filepath.Join(stage, l.Name), created)
		if err != nil {
			return nil, err
		}
		b, err := WriteImage(spec, filepath.Join(outDir, l.Name+".tar"))
		if err != nil {
			return nil, err
		}
		built = append(built, b)
	}
	return built, nil
}

// WriteImage builds spec's image and writes it as an archive at path.
func WriteImage(spec Spec, path string) (Built, error) {
	img, err := Build(spec)
	if err != nil {
		return Built{}, err
	}
	digest, err := img.Image.Digest()
	if err != nil {
		return Built{}, fmt.Errorf("image %s: %w", spec.Tag, err)
	}
	id, err := img.Image.ConfigName()
	if err != nil {
		return Built{}, fmt.Errorf("image %s: %w", spec.Tag, err)
	}
	if err := WriteArchive(path, img); err != nil {
		return Built{}, err
	}
	return Built{Tag: img.Tag.String(), Digest: digest, ImageID: id, Archive: path}, nil
}

// CreatedFromEnv is the time every timestamp of an image is set to:
// SOURCE_DATE_EPOCH (seconds since 1970) when set, else 1970-01-01.
func CreatedFromEnv() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}
