package imagebuild

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// root is the repository's top directory.
const root = "../.."

func layout(t *testing.T, version, name string) Layout {
	t.Helper()
	for _, l := range Layouts(version, "v1.9.1") {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no layout %s", name)
	return Layout{}
}

// The flatnet image holds the agent (its entrypoint), flatnetctl, and the CNI
// plugins under the names install-cni gives them on the node; every file
// executable, every directory 0755, all owned by root.
func TestFlatnetLayout(t *testing.T) {
	l := layout(t, "v1.2.3", "flatnet")
	if l.Tag != "ghcr.io/flatnet-io/flatnet:v1.2.3" {
		t.Errorf("tag %s", l.Tag)
	}
	spec := Spec{Tag: l.Tag, Entrypoint: l.Entrypoint, Arch: "amd64", Created: time.Unix(0, 0)}
	dir := t.TempDir()
	for _, b := range l.Binaries {
		src := filepath.Join(dir, path.Base(b.Path))
		if err := os.WriteFile(src, []byte(b.Package), 0o644); err != nil {
			t.Fatal(err)
		}
		spec.Files = append(spec.Files, File{Path: b.Path, Mode: 0o755, Source: src})
	}
	built, err := WriteImage(spec, filepath.Join(dir, "flatnet.tar"))
	if err != nil {
		t.Fatal(err)
	}
	img := readArchive(t, built)
	got := entries(t, img, spec.Created)
	want := []string{
		"opt/ dir 755", "opt/flatnet/ dir 755", "opt/flatnet/cni/ dir 755",
		"opt/flatnet/cni/flatnet 755 ./cmd/flatnet",
		"opt/flatnet/cni/flatnet-bandwidth 755 github.com/containernetworking/plugins/plugins/meta/bandwidth",
		"opt/flatnet/cni/flatnet-portmap 755 github.com/containernetworking/plugins/plugins/meta/portmap",
		"opt/flatnet/cni/loopback 755 github.com/containernetworking/plugins/plugins/main/loopback",
		"usr/ dir 755", "usr/local/ dir 755", "usr/local/bin/ dir 755",
		"usr/local/bin/flatnet-agent 755 ./cmd/flatnet-agent",
		"usr/local/bin/flatnetctl 755 ./cmd/flatnetctl",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("flatnet image (-want +got):\n%s", d)
	}
	cfg, _ := img.ConfigFile()
	if !cmp.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/flatnet-agent"}) {
		t.Errorf("entrypoint %v", cfg.Config.Entrypoint)
	}
	for _, b := range l.Binaries {
		if !strings.Contains(b.LDFlags, "version") {
			t.Errorf("%s: no version stamp in %q", b.Path, b.LDFlags)
		}
	}
}

// The lab's images: pause under the tag containerd's CRI takes for its
// sandbox image, echo beside flatnet's.
func TestLabLayouts(t *testing.T) {
	pause, echo := layout(t, "v1.2.3", "pause"), layout(t, "v1.2.3", "echo")
	if pause.Tag != "registry.k8s.io/pause:3.10" || pause.Entrypoint[0] != "/pause" || pause.Binaries[0].Package != "./lab/images/pause" {
		t.Errorf("pause: %+v", pause)
	}
	if echo.Tag != "ghcr.io/flatnet-io/flatnet-echo:v1.2.3" || echo.Entrypoint[0] != "/echo" || echo.Binaries[0].Package != "./lab/images/echo" {
		t.Errorf("echo: %+v", echo)
	}
}

// deploy/image/Dockerfile builds the same layout, for Docker users: every
// path of the image and its package appear in it.
func TestDockerfileLayout(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "deploy/image/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(data)
	for _, b := range layout(t, "v1.2.3", "flatnet").Binaries {
		if !strings.Contains(dockerfile, "/out"+b.Path+" ") {
			t.Errorf("the Dockerfile does not build /out%s", b.Path)
		}
		pkg := strings.Replace(b.Package, PluginsModule, "$P", 1)
		if !strings.Contains(dockerfile, "/out"+b.Path+" "+pkg) {
			t.Errorf("the Dockerfile does not build %s from %s", b.Path, pkg)
		}
	}
	if !strings.Contains(dockerfile, "FROM scratch") || !strings.Contains(dockerfile, `ENTRYPOINT ["/usr/local/bin/flatnet-agent"]`) {
		t.Error("the Dockerfile's image is not scratch with the agent as entrypoint")
	}
}

// `make image` (VERSION defaults to the kustomization's newTag) builds the
// tag the kustomization runs, and the DaemonSet names flatnet's repository.
func TestKustomizationNamesTheImage(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "deploy/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^  - name: (\S+)\n    newTag: (\S+)$`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("deploy/kustomization.yaml sets no image tag")
	}
	if got := layout(t, m[2], "flatnet").Tag; got != m[1]+":"+m[2] {
		t.Errorf("make image builds %s, the kustomization runs %s:%s", got, m[1], m[2])
	}
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(makefile), "VERSION ?= $(shell sed -n 's/^ *newTag: *//p' deploy/kustomization.yaml)") {
		t.Error("the Makefile's VERSION does not default to the kustomization's newTag")
	}
	ds, err := os.ReadFile(filepath.Join(root, "deploy/daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`image: (\S+?)(:\S+)?\n`).FindAllStringSubmatch(string(ds), -1)
	if len(images) == 0 {
		t.Fatal("the DaemonSet names no image")
	}
	for _, img := range images {
		if img[1] != m[1] {
			t.Errorf("the DaemonSet runs %s, not %s", img[1], m[1])
		}
	}
}

// TestCoreDNSVersion: the lab's CoreDNS image is tagged with the release its
// module builds.
func TestCoreDNSVersion(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "kube", "coredns", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "github.com/coredns/coredns "+CoreDNSVersion+"\n") {
		t.Errorf("test/kube/coredns/go.mod does not require github.com/coredns/coredns %s", CoreDNSVersion)
	}
}
