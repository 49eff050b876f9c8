package labnet

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// SweepDeadRuns removes what test processes that died left behind: for each
// namespace whose name pattern matches with a process ID as its first group,
// when that process no longer runs, the namespaces sharing the match (every
// process in them, the namespaces, FRR's run directories). Live runs', and
// this process's own, are left alone. It reports what it could not remove.
func SweepDeadRuns(pattern *regexp.Regexp) error {
	entries, _ := os.ReadDir("/run/netns")
	dead := map[string]bool{}
	for _, e := range entries {
		m := pattern.FindStringSubmatch(e.Name())
		if len(m) < 2 {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || ProcessAlive(pid) {
			continue
		}
		dead[m[0]] = true
	}
	var errs []string
	for prefix := range dead {
		if err := Sweep(prefix); err != nil {
			errs = append(errs, fmt.Sprintf("%s*: %v", prefix, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("sweep leftovers of dead runs: %s", strings.Join(errs, "; "))
	}
	return nil
}

// ProcessAlive says whether pid runs (a zombie does not).
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
