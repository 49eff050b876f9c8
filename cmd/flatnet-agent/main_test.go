package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flatnet-io/flatnet/agent"
)

// `flatnet-agent install-cni` takes its flags and installs; a stray
// argument is an error.
func TestInstallCNI(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]string{}
	for _, d := range []string{"src", "bin", "conf", "cm"} {
		dirs[d] = filepath.Join(root, d)
		if err := os.Mkdir(dirs[d], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"flatnet", "loopback"} {
		if err := os.WriteFile(filepath.Join(dirs["src"], b), []byte(b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conflist := filepath.Join(dirs["cm"], "10-flatnet.conflist")
	if err := os.WriteFile(conflist, []byte(`{"cniVersion": "1.0.0", "name": "flatnet", "plugins": [{"type": "flatnet"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"install-cni", "--source-dir", dirs["src"], "--bin-dir", dirs["bin"], "--conflist", conflist, "--conf-dir", dirs["conf"]}
	if err := run(context.Background(), append(args, "extra")); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("stray argument: %v", err)
	}
	if err := run(context.Background(), args); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"bin/flatnet", "bin/loopback", "conf/10-flatnet.conflist"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
}

// `flatnet-agent my.yaml` is an error, not an agent on built-in defaults:
// the file is named with --config.
func TestRunRefusesArguments(t *testing.T) {
	// Should an argument be ignored, the agent must not touch this host:
	// its paths are the test's, and it stops at once.
	dir := t.TempDir()
	t.Setenv("FLATNET_API_SOCKET", filepath.Join(dir, "flatnet.sock"))
	t.Setenv("FLATNET_DATASTORE_FILE_DIR", filepath.Join(dir, "ipam"))
	t.Setenv("FLATNET_HEALTH_ADDRESS", "127.0.0.1:0")
	t.Setenv("FLATNET_BGP_ENABLED", "false")
	t.Setenv("FLATNET_NODENAME", "node-a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, args := range [][]string{{"my.yaml"}, {"--node-name", "n1", "extra"}, {"--", "x"}} {
		err := run(ctx, args)
		if err == nil || !strings.Contains(err.Error(), "unexpected argument") {
			t.Errorf("run(%q) = %v, want an unexpected-argument error", args, err)
		}
	}
	err := run(ctx, []string{"my.yaml"})
	if err == nil || !strings.Contains(err.Error(), "--config my.yaml") {
		t.Errorf("run(my.yaml) = %v, want a hint at --config", err)
	}
}

// SIGTERM is a planned restart, SIGINT is not.
func TestStopCause(t *testing.T) {
	if err := stopCause(syscall.SIGTERM); !errors.Is(err, agent.ErrPlannedRestart) {
		t.Errorf("SIGTERM: %v, want a planned restart", err)
	}
	if err := stopCause(syscall.SIGINT); errors.Is(err, agent.ErrPlannedRestart) {
		t.Errorf("SIGINT: %v, want no planned restart", err)
	}
}
