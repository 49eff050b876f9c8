package lab

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/flatnet-io/flatnet/lab/netns"
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
		if err != nil || pid == os.Getpid() || netns.ProcessAlive(pid) {
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
