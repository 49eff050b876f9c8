package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLinksNoTestCode fails if flatnet-lab, a product, links the testing
// package or any of the repository's test code (test/...): the lab's parts
// must live in non-test packages. It asks the go command for the build's
// dependencies, with the flags and environment `make build` uses.
func TestLinksNoTestCode(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list flatnet-lab's dependencies: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list -deps: %v: %s", err, exit.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || deps[len(deps)-1] != "github.com/flatnet-io/flatnet/cmd/flatnet-lab" {
		t.Fatalf("go list -deps gave no plausible list for flatnet-lab: %q", deps)
	}
	for _, d := range deps {
		if d == "testing" || strings.HasPrefix(d, "testing/") || strings.HasPrefix(d, "github.com/flatnet-io/flatnet/test/") {
			t.Errorf("flatnet-lab links %s", d)
		}
	}
}

// TestTopologyByName loads a topology by its name in the topology
// directory, as the README lists them, as well as by path; a name that is
// none says which there are.
func TestTopologyByName(t *testing.T) {
	dir := filepath.Join("..", "..", "test", "topologies")
	for _, arg := range []string{"three-node-mesh", filepath.Join(dir, "three-node-mesh", "three-node-mesh.clab.yml")} {
		tp, err := loadTopology(arg, dir)
		if err != nil {
			t.Errorf("-t %s: %v", arg, err)
			continue
		}
		if tp.Name != "three-node-mesh" {
			t.Errorf("-t %s: lab %q, want three-node-mesh", arg, tp.Name)
		}
	}
	_, err := loadTopology("three-node-meh", dir)
	if err == nil || !strings.Contains(err.Error(), "rack-pair, three-node-mesh, two-node-tor, two-node-tor-bird") {
		t.Errorf("-t three-node-meh: %v, want an error listing the topologies", err)
	}
}
