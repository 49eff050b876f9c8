package imagebuild

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/test/harness"
)

// A built archive is what containerd imports: `ctr images import` takes it
// and unpacks it, and the image is listed under its tag with the config
// (image ID) that was built.
func TestPrivilegedContainerdImport(t *testing.T) {
	harness.RequireTools(t, "go")
	tc := Toolchain{Go: "go", ModuleDir: root, Arch: runtime.GOARCH}
	built, err := tc.BuildArchives(context.Background(), "v0.0.0-test", t.TempDir(), time.Unix(0, 0), []string{"pause"})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Tag != "registry.k8s.io/pause:3.10" {
		t.Fatalf("built %+v, want the pause image", built)
	}
	c := harness.StartContainerd(t, harness.ContainerdConfig{})
	t.Log(c.Ctr(t, "images", "import", built[0].Archive))

	var digest string
	for _, line := range strings.Split(c.Ctr(t, "images", "ls"), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == built[0].Tag {
			digest = f[2]
		}
	}
	if digest == "" {
		t.Fatalf("%s is not listed after the import", built[0].Tag)
	}
	var manifest struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(c.Ctr(t, "content", "get", digest)), &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Config.Digest != built[0].ImageID.String() {
		t.Errorf("containerd's %s has config %s, want the built image ID %s", built[0].Tag, manifest.Config.Digest, built[0].ImageID)
	}
	if out := c.Ctr(t, "images", "check"); !strings.Contains(out, "complete") || !strings.Contains(out, "true") {
		t.Errorf("ctr images check: not complete and unpacked:\n%s", out)
	}
}
