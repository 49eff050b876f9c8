package main

import (
	"errors"
	"os/exec"
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
