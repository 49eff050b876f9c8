package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireTools stops t unless it runs as root with every tool on PATH, like
// Require but without the repository's binaries: for tests that build what
// they need.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	stopUnless(t, missingTools(tools), "make deps installs them")
}

// RequireFiles stops t unless every file exists (image archives, say),
// naming what makes them.
func RequireFiles(t testing.TB, makes string, files ...string) {
	t.Helper()
	var missing []string
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	stopUnless(t, missing, makes)
}

// Containerd is a private containerd (Debian's, /usr/bin/containerd): its
// own root, state, sockets and configuration in a directory of the test's,
// in a mount namespace of its own (unpacking images mounts snapshots), so
// it touches nothing of the host's. It runs no containers: containerd 1.6's
// shims would use /run/containerd.
type Containerd struct {
	Socket string // the gRPC socket, for ctr -a and CRI clients
	Dir    string
}

// ContainerdConfig says what a private containerd serves.
type ContainerdConfig struct {
	// CRI enables the CRI plugin with these CNI directories; without it
	// the CRI plugin is disabled.
	CRI                bool
	CNIBinDir, CNIConf string
}

// StartContainerd starts a private containerd and stops it when t ends.
// It returns once containerd answers.
func StartContainerd(t testing.TB, cfg ContainerdConfig) *Containerd {
	t.Helper()
	RequireTools(t, "containerd", "ctr", "unshare")
	dir := t.TempDir()
	c := &Containerd{Socket: filepath.Join(dir, "containerd.sock"), Dir: dir}
	disabled := `"io.containerd.grpc.v1.cri", `
	if cfg.CRI {
		disabled = ""
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [%s"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled,
		c.Socket, c.Socket+".ttrpc", filepath.Join(dir, "opt"))
	if cfg.CRI {
		config += fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  tolerate_missing_hugetlb_controller = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, cfg.CNIBinDir, cfg.CNIConf)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(c.LogPath())
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
		if err := <-exited; err != nil {
			t.Logf("containerd: %v", err)
		}
	})
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("containerd exited: %v\n%s", err, c.Log())
		default:
		}
		if exec.Command("ctr", "-a", c.Socket, "version").Run() == nil {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogPath is where containerd logs (at debug level).
func (c *Containerd) LogPath() string { return filepath.Join(c.Dir, "containerd.log") }

// Log is what containerd logged so far.
func (c *Containerd) Log() string {
	out, _ := os.ReadFile(c.LogPath())
	return string(out)
}

// Ctr runs ctr against c in the k8s.io namespace (the kubelet's).
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"-a", c.Socket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
