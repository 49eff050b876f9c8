package harness

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab/controlplane"
)

// Kubectl runs kubectl with the given kubeconfig ("": none, for commands that
// need no server, such as kustomize) and returns its standard output; an
// error carries its standard error.
func Kubectl(kubeconfig string, args ...string) (string, error) {
	return controlplane.Kubectl(KubeBinDir(), kubeconfig, args...)
}

// MustKubectl runs kubectl as the admin and fails t if it fails.
func (k *Kube) MustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// KubeconfigForToken writes a kubeconfig that authenticates with token into
// a file of t's and returns its path.
func (k *Kube) KubeconfigForToken(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := k.WriteKubeconfig(path, token); err != nil {
		t.Fatal(err)
	}
	return path
}

// ServiceAccountToken returns a bound token, good for an hour, for the
// ServiceAccount namespace/name.
func (k *Kube) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	token, err := k.Server.ServiceAccountToken(namespace, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// ApplyCRDs installs the CRDs in deploy/crds and waits until the API server
// serves them.
func (k *Kube) ApplyCRDs(t testing.TB) {
	t.Helper()
	k.MustKubectl(t, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(Root(), "deploy", "crds"))
	k.MustKubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "-f", filepath.Join(Root(), "deploy", "crds"))
}
