package imagebuild

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireRoot skips t without root or one of tools, and fails it instead in
// CI, where a privileged test that skips has not run.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "privileged test needs: " + strings.Join(missing, ", ") + " (make deps installs them)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// containerd is a private containerd: its own root, state, socket and
// configuration in a directory of the test's, without CRI, in a mount
// namespace of its own (unpacking mounts snapshots).
type containerd struct {
	sock string
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	c := &containerd{sock: filepath.Join(dir, "containerd.sock")}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil && !strings.Contains(err.Error(), "terminated") {
			t.Logf("containerd: %v", err)
		}
	})
	// Wait until it answers, or fail if it exits first.
	for {
		select {
		case err := <-exited:
			exited <- err
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd exited: %v\n%s", err, out)
		default:
		}
		if err := exec.Command("ctr", "-a", c.sock, "version").Run(); err == nil {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"-a", c.sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A built archive is what containerd imports: `ctr images import` takes it
// and unpacks it, and the image is listed under its tag with the config
// (image ID) that was built.
func TestPrivilegedContainerdImport(t *testing.T) {
	requireRoot(t, "containerd", "ctr", "unshare", "go")
	tc := Toolchain{Go: "go", ModuleDir: root, Arch: runtime.GOARCH}
	built, err := tc.BuildArchives(context.Background(), "v0.0.0-test", t.TempDir(), time.Unix(0, 0), []string{"pause"})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Tag != "registry.k8s.io/pause:3.10" {
		t.Fatalf("built %+v, want the pause image", built)
	}
	c := startContainerd(t)
	t.Log(c.ctr(t, "images", "import", built[0].Archive))

	var digest string
	for _, line := range strings.Split(c.ctr(t, "images", "ls"), "\n") {
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
	if err := json.Unmarshal([]byte(c.ctr(t, "content", "get", digest)), &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Config.Digest != built[0].ImageID.String() {
		t.Errorf("containerd's %s has config %s, want the built image ID %s", built[0].Tag, manifest.Config.Digest, built[0].ImageID)
	}
	if out := c.ctr(t, "images", "check"); !strings.Contains(out, "complete") || !strings.Contains(out, "true") {
		t.Errorf("ctr images check: not complete and unpacked:\n%s", out)
	}
}
