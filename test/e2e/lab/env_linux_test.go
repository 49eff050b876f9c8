package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/topology"
	"github.com/flatnet-io/flatnet/test/harness"
)

// runPrefix starts the names of this test process's namespaces.
var runPrefix = fmt.Sprintf("flabt%d-", os.Getpid())

var deadRun = regexp.MustCompile(`^flabt(\d+)-`)

func TestMain(m *testing.M) {
	sweepDeadRuns()
	os.Exit(m.Run())
}

// sweepDeadRuns removes what earlier test processes that died left behind.
func sweepDeadRuns() {
	if os.Geteuid() != 0 {
		return
	}
	if err := lab.SweepDeadRuns(deadRun); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// testTopology is a topology the tests bring up, with what they need to know of
// it that the file does not say in one place.
type testTopology struct {
	name string // directory and file name under test/topologies
	// holdTime is the hold time of the sessions that carry node1's routes to
	// the others: the explicit peers' holdTime, or bgp.meshHoldTime.
	holdTime time.Duration
	// restartTime is the graceful restart time the nodes announce.
	restartTime time.Duration
	// datastore is the lab's (lab.Lab.Datastore): "" is the file store.
	datastore string
}

// label names the topology in test names: its name, and the datastore when
// not the file store.
func (t testTopology) label() string {
	if t.datastore == "" {
		return t.name
	}
	return t.name + "-" + t.datastore
}

var topologies = []testTopology{
	{name: "two-node-tor", holdTime: 9 * time.Second, restartTime: 60 * time.Second},
	{name: "two-node-tor-bird", holdTime: 9 * time.Second, restartTime: 60 * time.Second},
	{name: "three-node-mesh", holdTime: 9 * time.Second, restartTime: 20 * time.Second},
	{name: "rack-pair", holdTime: 9 * time.Second, restartTime: 60 * time.Second},
	// The mesh again, on the lab's own kube-apiserver: IPAM in IPAMBlock
	// objects, the mesh from Node objects.
	{name: "three-node-mesh", holdTime: 9 * time.Second, restartTime: 20 * time.Second, datastore: lab.DatastoreKubernetes},
}

// env is a topology brought up for one test.
type env struct {
	*lab.Lab
	topo testTopology
	dir  string
}

// editConfig is what the tests change in their copy of each node's config:
// blocks of 16 addresses (/28, /124), so that a handful of pods fills one.
func editConfig(conf string) string {
	conf = strings.ReplaceAll(conf, "blockSize: 26", "blockSize: 28")
	return strings.ReplaceAll(conf, "blockSize: 122", "blockSize: 124")
}

// up copies a topology into the test's directory, applies edit to each
// flatnet node's config, checks that tools and the routers' daemons are
// there (harness.Require), and brings it up under this run's own namespace
// prefix. The lab is torn down when the test ends.
func up(t testing.TB, topo testTopology, edit func(string) string, tools ...string) *env {
	t.Helper()
	tools = append(tools, "ip", "ping", "iptables", "ip6tables")
	src := filepath.Join(harness.Root(), "test", "topologies", topo.name)
	tp, err := topology.Load(filepath.Join(src, topo.name+".clab.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tp.NodesOf(topology.RoleFRR)) > 0 {
		tools = append(tools, "vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd")
	}
	if len(tp.NodesOf(topology.RoleBIRD)) > 0 {
		tools = append(tools, "bird", "birdc")
	}
	harness.Require(t, tools...)
	if topo.datastore == lab.DatastoreKubernetes {
		harness.RequireKube(t)
	}

	dir := t.TempDir()
	// FRR's daemons run as the frr user and must reach their state directory.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := filepath.Join(dir, "topology")
	if out, err := exec.Command("cp", "-r", src, files).CombinedOutput(); err != nil {
		t.Fatalf("copy topology: %v: %s", err, out)
	}
	for _, n := range tp.NodesOf(topology.RoleFlatnet) {
		conf, ok := tp.Bind(n, topology.FlatnetConfigPath)
		if !ok {
			t.Fatalf("%s: node %s binds no config", topo.name, n.Name)
		}
		path := filepath.Join(files, strings.TrimPrefix(conf, src+"/"))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tp, err = topology.Load(filepath.Join(files, topo.name+".clab.yml"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		Lab: &lab.Lab{
			T: tp, Bin: filepath.Dir(harness.Bin("flatnet-agent")), StateDir: filepath.Join(dir, "state"),
			Prefix: prefixOf(topo), Datastore: topo.datastore, KubeBin: harness.KubeBinDir(),
		},
		topo: topo, dir: dir,
	}
	if _, bench := t.(*testing.B); !bench {
		e.Log = testWriter{t} // benchmarks keep their output to the figures
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs(t)
		}
		if err := e.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// prefixOf is the namespace prefix of a topology in this run. The
// topology's index keeps it from being the start of another's:
// flabt<pid>-0-two-node-tor- is not the start of flabt<pid>-1-two-node-tor-bird-.
func prefixOf(topo testTopology) string {
	return fmt.Sprintf("%s%d-%s-", runPrefix, slices.Index(topologies, topo), topo.name)
}

// dumpLogs logs the tail of every daemon's log, for a failed test.
func (e *env) dumpLogs(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(e.StateDir, "*", "*.log"))
	more, _ := filepath.Glob(filepath.Join(e.StateDir, "*", "*", "*.log"))
	for _, f := range append(logs, more...) {
		b, _ := os.ReadFile(f)
		t.Logf("%s (tail):\n%s", strings.TrimPrefix(f, e.StateDir+"/"), tail(string(b), 30))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// flatnetNodes and routers are the lab's node names by role.
func (e *env) flatnetNodes() []string { return names(e.T.NodesOf(topology.RoleFlatnet)) }

func (e *env) routers() []string {
	return names(append(e.T.NodesOf(topology.RoleFRR), e.T.NodesOf(topology.RoleBIRD)...))
}

func names(nodes []*topology.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

// others is every flatnet node but one.
func (e *env) others(node string) []string {
	return slices.DeleteFunc(e.flatnetNodes(), func(n string) bool { return n == node })
}

// addPods attaches n pods named pod1..podN to every flatnet node.
func (e *env) addPods(t testing.TB, n int) {
	t.Helper()
	for _, node := range e.flatnetNodes() {
		for i := 1; i <= n; i++ {
			if _, err := e.AddPod(t.Context(), node, fmt.Sprintf("pod%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// podsOn lists the pods of one node.
func (e *env) podsOn(t testing.TB, node string) []*lab.Pod {
	t.Helper()
	pods, err := e.Pods()
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(pods, func(p *lab.Pod) bool { return p.Node != node })
}

// waitVerify runs `flatnetctl verify` until every check passes, failing t
// with the failed checks after timeout.
func (e *env) waitVerify(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for deadline := start.Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		checks, err := e.Verify(t.Context())
		if err == nil {
			var failed []string
			for _, c := range checks {
				if !c.OK {
					failed = append(failed, fmt.Sprintf("%s %s -> %s (%s): %s", c.Rule, c.From, c.To, c.Target, c.Detail))
				}
			}
			if len(failed) == 0 {
				if _, bench := t.(*testing.B); !bench {
					t.Logf("verify: all %d checks passed", len(checks))
				}
				return time.Since(start)
			}
			last = strings.Join(failed, "\n")
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify still failing after %v:\n%s", timeout, last)
		}
	}
}

// eventually polls cond until it holds, failing t after timeout with what
// and cond's last detail.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var detail string
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		var ok bool
		if ok, detail = cond(); ok {
			return
		}
		if time.Now().After(deadline) || t.Context().Err() != nil {
			t.Fatalf("after %v, still not: %s\n%s", timeout, what, detail)
		}
	}
}

// kernelPrefixes lists the destinations of the routes in a namespace's main
// tables, IPv4 and IPv6, that forward somewhere: blackholes and the like are
// left out.
func (e *env) kernelPrefixes(ns string) (map[netip.Prefix]bool, error) {
	out := map[netip.Prefix]bool{}
	for _, fam := range []string{"-4", "-6"} {
		s, err := e.Exec(ns, "ip", fam, "route", "show")
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " ") {
				continue
			}
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				if a, aerr := netip.ParseAddr(f[0]); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
				} else {
					continue // blackhole, unreachable, default, ...
				}
			}
			out[p] = true
		}
	}
	return out, nil
}

// missing returns which of prefixes a namespace has no route for.
func (e *env) missing(ns string, prefixes []netip.Prefix) ([]netip.Prefix, error) {
	have, err := e.kernelPrefixes(ns)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(prefixes), func(p netip.Prefix) bool { return have[p] }), nil
}

// ipam dials a node's agent for IPAM.
func (e *env) ipam(t testing.TB, node string) ipampb.IPAMClient {
	t.Helper()
	c, err := agentclient.Dial(e.Socket(node))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.IPAM
}

// blocksOf lists the blocks with an affinity to node, asking one agent (the
// datastore is shared).
func (e *env) blocksOf(t testing.TB, ask, node string) []netip.Prefix {
	t.Helper()
	u, err := e.ipam(t, ask).Usage(t.Context(), &ipampb.UsageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, p := range u.GetPools() {
		for _, b := range p.GetBlocks() {
			if b.GetAffinity() == node {
				out = append(out, netip.MustParsePrefix(b.GetCidr()))
			}
		}
	}
	return out
}

// allocated lists a node's allocated addresses.
func (e *env) allocated(t testing.TB, node string) map[netip.Addr]string {
	t.Helper()
	l, err := e.ipam(t, node).List(t.Context(), &ipampb.ListRequest{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]string{}
	for _, a := range l.GetAllocations() {
		out[netip.MustParseAddr(a.GetAddress())] = a.GetHandle()
	}
	return out
}

// status asks a node's agent for its status.
func (e *env) status(ctx context.Context, node string) (*agentpb.StatusResponse, error) {
	return e.AgentStatus(ctx, node)
}

// settled says whether a node's agent has every session established and has
// converged.
func (e *env) settled(ctx context.Context, node string) (bool, string) {
	st, err := e.status(ctx, node)
	if err != nil {
		return false, err.Error()
	}
	var b strings.Builder
	ok := st.GetRoutes().GetConverged() && len(st.GetPeers()) > 0
	for _, p := range st.GetPeers() {
		fmt.Fprintf(&b, "%s %s; ", p.GetName(), p.GetState())
		ok = ok && p.GetState() == "established"
	}
	fmt.Fprintf(&b, "converged %v", st.GetRoutes().GetConverged())
	return ok, b.String()
}

// ping sends count echo requests from a namespace and says whether one came back.
func (e *env) ping(ns string, dst netip.Addr) error {
	_, err := e.Exec(ns, "ping", "-c", "1", "-W", "1", dst.String())
	return err
}

// pinger is a ping running in the background, every 10 ms.
type pinger struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startPing(ns string, dst netip.Addr) (*pinger, error) {
	p := &pinger{cmd: exec.Command("ip", "netns", "exec", ns, "ping", "-i", "0.01", "-W", "1", dst.String())}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	return p, p.cmd.Start()
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// stop interrupts the ping (`ip netns exec` became ping itself) and returns
// how many requests it sent and how many replies came back.
func (p *pinger) stop() (sent, received int, err error) {
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	m := pingSummary.FindStringSubmatch(p.out.String())
	if m == nil {
		return 0, 0, fmt.Errorf("no ping summary in: %s", tail(p.out.String(), 5))
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}
