package netns

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// Run runs a command and returns its combined output; a failure's error
// carries the command line and the output.
func Run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Exec runs a command inside the named namespace (`ip netns exec`) and
// returns its combined output, like Run.
func Exec(ns string, args ...string) (string, error) {
	return Run("ip", append([]string{"netns", "exec", ns}, args...)...)
}
