// Package bgpbench_test measures flatnet's route programming end to end, with
// the real binaries in network namespaces, side by side with its references:
//
//   - BenchmarkRouteInstall: a GoBGP injector announces 10k and 100k /32s to
//     a flatnet node and to an FRR node (bgpd + zebra); the time from the
//     session's Established to the last route in the receiving kernel, next
//     to a raw `ip -batch` install of the same routes (the kernel's limit).
//     It also reports the agent's RSS with the routes learned, and FRR's.
//   - BenchmarkBlockConvergence: a block claimed on node1 → its route in
//     node2's kernel, over an iBGP mesh session.
//
// The benchmarks report (b.ReportMetric); they assert no target. Every lab
// runs under a name of this test process's, and a run sweeps what dead runs
// left. Privileged: in CI (CI=true) a missing prerequisite fails them.
package bgpbench_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/topology"
	"github.com/flatnet-io/flatnet/test/harness"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the BGP injector, run by the benchmarks
	// inside a namespace (see injector_linux_test.go).
	if spec := os.Getenv(envInjector); spec != "" {
		if err := runInjector(spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "injector:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Geteuid() == 0 {
		sweepDeadLabs()
	}
	os.Exit(m.Run())
}

// labPrefix starts the name of every lab of this process: bb<pid>-<n>.
var (
	labPrefix = fmt.Sprintf("bb%d-", os.Getpid())
	labSeq    atomic.Int32
)

// sweepDeadLabs removes what earlier benchmark processes that died left.
func sweepDeadLabs() {
	if err := lab.SweepDeadRuns(regexp.MustCompile(`^flab-bb(\d+)-`)); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// requireLab stops b unless everything the labs run is here: outside CI it
// skips, in CI it fails.
func requireLab(b *testing.B) {
	b.Helper()
	harness.Require(b, "ip", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra")
}

// benchLab is a lab brought up for one measurement, and its output.
type benchLab struct {
	*lab.Lab
	dir string
	log *syncBuffer
}

// upLab writes a topology (its YAML, with "name: LAB") and the files it
// binds (path relative to the topology → content) into a fresh directory,
// and brings it up under a name of this process's. Call down when done; a
// cleanup of b does it too.
func upLab(b *testing.B, clab string, files map[string]string) *benchLab {
	b.Helper()
	dir := b.TempDir()
	// FRR's daemons run as the frr user and must reach their state directory.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	name := fmt.Sprintf("%s%d", labPrefix, labSeq.Add(1))
	files["lab.clab.yml"] = strings.Replace(clab, "name: LAB", "name: "+name, 1)
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	topo, err := topology.Load(filepath.Join(dir, "lab.clab.yml"))
	if err != nil {
		b.Fatal(err)
	}
	l := &benchLab{dir: dir, log: &syncBuffer{}}
	l.Lab = &lab.Lab{T: topo, Bin: filepath.Join(harness.Root(), "bin"), StateDir: filepath.Join(dir, "state"), Log: l.log}
	b.Cleanup(func() { l.down(b) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Up(ctx); err != nil {
		b.Fatalf("lab up: %v\n%s", err, l.log.String())
	}
	return l
}

// down tears the lab down; when b failed it first shows the agents' logs.
func (l *benchLab) down(b *testing.B) {
	if l.Lab == nil {
		return
	}
	if b.Failed() {
		for _, n := range l.T.NodesOf(topology.RoleFlatnet) {
			out, _ := os.ReadFile(filepath.Join(l.StateDir, n.Name, "agent.log"))
			b.Logf("%s agent log (tail):\n%s", n.Name, tail(string(out), 30))
		}
		b.Logf("lab log:\n%s", l.log.String())
	}
	if err := l.Down(); err != nil {
		b.Errorf("lab down: %v", err)
	}
	l.Lab = nil
}

// pidFile reads a pid the lab wrote, relative to its state directory.
func (l *benchLab) pidFile(b *testing.B, rel string) int {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join(l.StateDir, rel))
	if err != nil {
		b.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		b.Fatalf("%s: %v", rel, err)
	}
	return pid
}

// kill ends a lab process (SIGKILL: it leaves its kernel routes) and waits
// until it is gone, so that it takes no CPU from what is measured next.
func kill(b *testing.B, pid int) {
	b.Helper()
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("process %d still there 10s after SIGKILL", pid)
		}
	}
}

// rssMiB reads a process's resident set size and its peak, in MiB.
func rssMiB(b *testing.B, pid int) (rss, peak float64) {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	field := func(name string) float64 {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				kB, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				return kB / 1024
			}
		}
		b.Fatalf("/proc/%d/status: no %s", pid, name)
		return 0
	}
	return field("VmRSS"), field("VmHWM")
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 1) of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(p*float64(len(s))))-1)]
}

// median is the middle of xs (the mean of the two middle ones for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
