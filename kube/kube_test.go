package kube_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/kube"
)

func TestRESTConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: u, user: {token: t0k3n}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kube.RESTConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://192.0.2.1:6443" || cfg.BearerToken != "t0k3n" || cfg.UserAgent != "flatnet-agent" {
		t.Errorf("config from %s: host %q, token %q, user agent %q", path, cfg.Host, cfg.BearerToken, cfg.UserAgent)
	}
	if _, err := kube.RESTConfig(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing kubeconfig is not an error")
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := kube.RESTConfig(""); err == nil || !strings.Contains(err.Error(), "in-cluster") {
		t.Errorf("in-cluster configuration outside a cluster: %v", err)
	}
}
