package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// Reaching a Kube: REST configurations, kubeconfig files and kubectl, as the
// admin or with a ServiceAccount's token.

// RESTConfig returns a client configuration authenticating as the admin.
func (k *Kube) RESTConfig() *rest.Config { return k.RESTConfigForToken(AdminToken) }

// RESTConfigForToken returns a client configuration authenticating with a
// bearer token, such as a ServiceAccount's from ServiceAccountToken.
func (k *Kube) RESTConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            k.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: k.caPEM},
		QPS:             -1, // tests measure the server, not client-side throttling
		Dial:            k.dial,
	}
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

// WriteKubeconfig writes a kubeconfig that authenticates with token to path.
func (k *Kube) WriteKubeconfig(path, token string) error {
	return os.WriteFile(path, k.kubeconfig(token), 0o600)
}

func (k *Kube) kubeconfig(token string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: user
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: user}
current-context: test
`, k.URL, k.CAFile, token)
}

// Kubectl runs kubectl as the admin, where the server runs, and returns its
// standard output; an error carries its standard error.
func (k *Kube) Kubectl(args ...string) (string, error) {
	return kubectl(k.opts.NetNS, k.Kubeconfig, nil, args...)
}

// Apply applies manifests (YAML, one or more documents) as the admin.
func (k *Kube) Apply(manifests []byte) error {
	_, err := kubectl(k.opts.NetNS, k.Kubeconfig, manifests, "apply", "-f", "-")
	return err
}

// Kubectl runs kubectl with the given kubeconfig ("": none, for commands that
// need no server, such as kustomize) and returns its standard output; an
// error carries its standard error.
func Kubectl(kubeconfig string, args ...string) (string, error) {
	return kubectl("", kubeconfig, nil, args...)
}

// kubectl runs kubectl in a network namespace (or "": this one's), with
// stdin as its standard input.
func kubectl(netns, kubeconfig string, stdin []byte, args ...string) (string, error) {
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig=" + kubeconfig}, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(kubeTools()["kubectl"], args...)
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, kubeTools()["kubectl"]}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	// Discovery caches go under the temporary directory, not $HOME.
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(os.TempDir(), "flatnet-kubectl-cache"))
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustKubectl is Kubectl that fails t.
func (k *Kube) MustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ServiceAccountToken returns a bound token for the ServiceAccount
// namespace/name from the TokenRequest API, as the kubelet would project it.
func (k *Kube) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	out := k.MustKubectl(t, "create", "token", name, "-n", namespace, "--duration=1h")
	return strings.TrimSpace(out)
}

// ApplyCRDs installs the CRDs in deploy/crds and waits until the API server
// serves them.
func (k *Kube) ApplyCRDs(t testing.TB) {
	t.Helper()
	k.MustKubectl(t, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(Root(), "deploy", "crds"))
	k.MustKubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "-f", filepath.Join(Root(), "deploy", "crds"))
}
