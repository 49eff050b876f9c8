package controlplane

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// Reaching a Server: REST configurations, kubeconfig files and kubectl, as
// the admin or with another token.

// RESTConfig returns a client configuration authenticating as the admin.
func (s *Server) RESTConfig() *rest.Config { return s.RESTConfigForToken(AdminToken) }

// RESTConfigForToken returns a client configuration authenticating with a
// bearer token, such as a ServiceAccount's from ServiceAccountToken.
func (s *Server) RESTConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.PKI.caPEM},
		QPS:             -1, // callers measure the server, not client-side throttling
		Dial:            s.dial,
	}
}

// WriteKubeconfig writes a kubeconfig that authenticates with token to path.
func (s *Server) WriteKubeconfig(path, token string) error {
	b := fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: flatnet
  cluster: {server: %q, certificate-authority: %q}
users:
- name: user
  user: {token: %q}
contexts:
- name: flatnet
  context: {cluster: flatnet, user: user}
current-context: flatnet
`, s.URL, s.CAFile, token)
	return os.WriteFile(path, b, 0o600)
}

// Kubectl runs kubectl as the admin, where the server runs, and returns its
// standard output; an error carries its standard error.
func (s *Server) Kubectl(args ...string) (string, error) {
	return kubectl(s.opts.BinDir, s.opts.NetNS, s.Kubeconfig, nil, args...)
}

// Apply applies manifests (YAML, one or more documents) as the admin.
func (s *Server) Apply(manifests []byte) error {
	_, err := kubectl(s.opts.BinDir, s.opts.NetNS, s.Kubeconfig, manifests, "apply", "-f", "-")
	return err
}

// ApplyCRDs applies CustomResourceDefinitions (server-side: they are too big
// for the last-applied annotation) and waits until the server serves every
// CRD it has.
func (s *Server) ApplyCRDs(manifests []byte) error {
	if _, err := kubectl(s.opts.BinDir, s.opts.NetNS, s.Kubeconfig, manifests, "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		return err
	}
	_, err := s.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	return err
}

// ServiceAccountToken returns a bound token for the ServiceAccount
// namespace/name from the TokenRequest API, as the kubelet would project it.
func (s *Server) ServiceAccountToken(namespace, name string, lifetime time.Duration) (string, error) {
	out, err := s.Kubectl("create", "token", name, "-n", namespace, "--duration="+lifetime.String())
	return strings.TrimSpace(out), err
}

// Kubectl runs kubectl (from PATH, else binDir) with the given kubeconfig
// ("": none, for commands that need no server, such as kustomize) and
// returns its standard output; an error carries its standard error.
func Kubectl(binDir, kubeconfig string, args ...string) (string, error) {
	return kubectl(binDir, "", kubeconfig, nil, args...)
}

// kubectl runs kubectl in a network namespace (or "": this one's), with
// stdin as its standard input.
func kubectl(binDir, netns, kubeconfig string, stdin []byte, args ...string) (string, error) {
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig=" + kubeconfig}, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(kubectlPath(binDir), args...)
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, kubectlPath(binDir)}, args...)...)
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
