package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/flatnet-io/flatnet/test/harness"
	"github.com/flatnet-io/flatnet/tools/imagebuild"
)

// The shipped conflist's cniVersion is one that every plugin of its chain
// speaks — asked (CNI VERSION) of the very binaries the image carries, built
// as `make image` builds them — and no newer than 1.0.0: containerd 1.6 and
// 1.7 vendor a libcni (containernetworking/cni 1.1.x) that parses results
// only up to 1.0.0 and refuses every 1.1.0 one ("unsupported CNI result
// version"), while the runtimes that know 1.1.0 (containerd 2.x, CRI-O) take
// 1.0.0 too. Every plugin type it names is a binary of the image's CNI
// directory, which install-cni puts on the node.
func TestConflistVersion(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(dir, "cni", "10-flatnet.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if newer, err := version.GreaterThan(list.CNIVersion, "1.0.0"); err != nil || newer {
		t.Errorf("cniVersion %q (%v): containerd 1.6 and 1.7 take results up to 1.0.0 only", list.CNIVersion, err)
	}

	var image imagebuild.Layout
	for _, l := range imagebuild.Layouts("test", "test") {
		if l.Name == "flatnet" {
			image = l
		}
	}
	chain := imagebuild.Layout{Name: "chain"}
	for _, p := range list.Plugins {
		i := slices.IndexFunc(image.Binaries, func(b imagebuild.Binary) bool {
			return b.Path == path.Join(imagebuild.CNIDir, p.Network.Type)
		})
		if i < 0 {
			t.Errorf("plugin type %s is not a binary of the image's %s", p.Network.Type, imagebuild.CNIDir)
			continue
		}
		chain.Binaries = append(chain.Binaries, image.Binaries[i])
	}
	bin := t.TempDir()
	tc := imagebuild.Toolchain{Go: "go", ModuleDir: harness.Root(), Arch: runtime.GOARCH}
	spec, err := tc.Compile(context.Background(), chain, bin, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range spec.Files {
		cmd := exec.Command(f.Source)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion": "` + list.CNIVersion + `"}`))
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s VERSION: %v", f.Path, err)
			continue
		}
		info, err := (&version.PluginDecoder{}).Decode(out)
		if err != nil {
			t.Errorf("%s VERSION: %v: %s", f.Path, err, out)
			continue
		}
		if !slices.Contains(info.SupportedVersions(), list.CNIVersion) {
			t.Errorf("%s supports %v, not the conflist's %s", f.Path, info.SupportedVersions(), list.CNIVersion)
		}
		t.Logf("%s: %v", path.Base(f.Path), info.SupportedVersions())
	}
}
