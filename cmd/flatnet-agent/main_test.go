package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
