package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flatnet-io/flatnet/test/harness"
)

// One API server for all the tests here.
var server harness.SharedKube

func TestMain(m *testing.M) {
	code := m.Run()
	server.Stop(code != 0)
	os.Exit(code)
}

// dir is deploy/, where kubectl -k points.
var dir = filepath.Join(harness.Root(), "deploy")

// object is a manifest document, decoded only as far as a test needs.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	raw []byte
}

// build runs kubectl kustomize over deploy/ and returns its documents.
func build(t *testing.T) []object {
	t.Helper()
	harness.RequireKube(t)
	out, err := harness.Kubectl("", "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	for _, doc := range strings.Split(out, "\n---\n") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("built manifest does not parse: %v\n%s", err, doc)
		}
		o.raw = []byte(doc)
		objs = append(objs, o)
	}
	return objs
}

// find returns the one object of kind whose name starts with prefix
// (generated ConfigMaps carry a hash suffix).
func find(t *testing.T, objs []object, kind, prefix string, into any) {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && strings.HasPrefix(o.Metadata.Name, prefix) {
			if err := yaml.Unmarshal(o.raw, into); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no %s %s* in the built manifests", kind, prefix)
}

// writeFile writes content into a file of t's and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
