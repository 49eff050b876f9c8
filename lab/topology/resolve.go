package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FileSuffix ends the name of a topology file.
const FileSuffix = ".clab.yml"

// Resolve finds the topology file a person means: arg is a path to a file,
// or to a directory that holds <its name>.clab.yml, or the name of a
// topology in one of dirs (<dir>/<name>/<name>.clab.yml), tried in order.
// On a miss the error says what was tried and lists the names dirs hold.
func Resolve(arg string, dirs ...string) (string, error) {
	if arg == "" {
		return "", errors.New("no topology given: want a file or the name of one")
	}
	if st, err := os.Stat(arg); err == nil {
		if !st.IsDir() {
			return arg, nil
		}
		file := filepath.Join(arg, filepath.Base(filepath.Clean(arg))+FileSuffix)
		if _, err := os.Stat(file); err == nil {
			return file, nil
		}
		return "", fmt.Errorf("topology %q: a directory without %s", arg, filepath.Base(file))
	}
	if labNameRE.MatchString(arg) {
		for _, dir := range dirs {
			file := filepath.Join(dir, arg, arg+FileSuffix)
			if _, err := os.Stat(file); err == nil {
				return file, nil
			}
		}
	}
	var have []string
	for _, dir := range dirs {
		for _, n := range Names(dir) {
			if !slices.Contains(have, n) {
				have = append(have, n)
			}
		}
	}
	msg := fmt.Sprintf("topology %q: no such file", arg)
	switch {
	case len(dirs) == 0:
	case len(have) == 0:
		msg += fmt.Sprintf(", and no topologies in %s", strings.Join(dirs, ", "))
	default:
		slices.Sort(have)
		msg += fmt.Sprintf(", nor a topology of that name in %s; there are: %s", strings.Join(dirs, ", "), strings.Join(have, ", "))
	}
	return "", errors.New(msg)
}

// Names lists the topologies in dir: the names of its subdirectories that
// hold a file named after them (<dir>/<name>/<name>.clab.yml).
func Names(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), e.Name()+FileSuffix)); e.IsDir() && err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}
