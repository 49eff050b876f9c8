package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/flatnet-io/flatnet/lab/controlplane"
)

// A real Kubernetes API server for tests (lab/controlplane): Debian's etcd
// and a kube-apiserver built from the module proxy (make kube-bins), on
// 127.0.0.1 ports the kernel picked. No controller manager, scheduler or
// kubelet runs: objects are what tests make them.

// AdminToken authenticates as "admin" in group system:masters.
const AdminToken = controlplane.AdminToken

// KubeBinDir is where make kube-bins put kube-apiserver: $FLATNET_KUBE_BIN,
// else the Makefile's cache directory, keyed the same way by the hash of
// test/kube/apiserver/go.sum.
func KubeBinDir() string {
	if d := os.Getenv("FLATNET_KUBE_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	sum, err := os.ReadFile(filepath.Join(Root(), "test", "kube", "apiserver", "go.sum"))
	if err != nil {
		return filepath.Join(home, ".cache", "flatnet", "kube-unknown")
	}
	h := sha256.Sum256(sum)
	return filepath.Join(home, ".cache", "flatnet", "kube-"+hex.EncodeToString(h[:])[:12])
}

// RequireKube stops t unless etcd, kube-apiserver and kubectl are there: it
// fails t in CI (CI=true), where a skipped test has not run, and skips it
// elsewhere. It needs no root.
func RequireKube(t testing.TB) {
	t.Helper()
	err := controlplane.CheckTools(KubeBinDir())
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	t.Skip(err)
}

// Kube is a running etcd and kube-apiserver.
type Kube struct {
	*controlplane.Server
	dir string // what Start was given: every attempt's files
}

// startKube starts a server in a fresh temporary directory.
func startKube() (*Kube, error) {
	dir, err := os.MkdirTemp("", "flatnet-kube-")
	if err != nil {
		return nil, err
	}
	s, err := controlplane.Start(dir, controlplane.Options{BinDir: KubeBinDir()})
	if err != nil {
		return nil, fmt.Errorf("%w (logs in %s)", err, dir)
	}
	return &Kube{Server: s, dir: dir}, nil
}

// stop stops the server and removes its files, unless keep: then it says
// where they are.
func (k *Kube) stop(keep bool, logf func(string, ...any)) {
	k.Stop()
	if keep {
		logf("etcd and kube-apiserver logs kept in %s", k.Dir)
		return
	}
	os.RemoveAll(k.dir)
}

// StartKube starts a fresh API server for t in a directory of its own, and
// stops it when t ends.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	RequireKube(t)
	k, err := startKube()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.stop(t.Failed(), t.Logf) })
	return k
}

// SharedKube is one API server for a whole test binary: the first Get starts
// it; TestMain calls Stop after m.Run. Tests sharing it must not run in
// parallel on the same objects.
type SharedKube struct {
	once sync.Once
	kube *Kube
	err  error
}

// Get returns the shared server, starting it on first use; it fails or skips
// t like RequireKube.
func (s *SharedKube) Get(t testing.TB) *Kube {
	t.Helper()
	RequireKube(t)
	s.once.Do(func() { s.kube, s.err = startKube() })
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.kube
}

// Stop stops the shared server, if it was started, and removes its
// directory, unless a test failed (TestMain's m.Run returned non-zero): then
// it keeps the logs and says where.
func (s *SharedKube) Stop(failed bool) {
	if s.kube == nil {
		return
	}
	s.kube.stop(failed, func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) })
}
