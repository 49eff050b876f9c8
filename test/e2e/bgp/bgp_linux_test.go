// Package bgp_test proves flatnet's BGP and route programming against a real
// FRR top-of-rack router: two flatnet nodes and FRR (bgpd + zebra) in network
// namespaces, eBGP with MD5, pods wired by the CNI plugin.
package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/topology"
	"github.com/flatnet-io/flatnet/test/harness"
)

// labName is this test process's lab; the namespaces are flab-<labName>-*.
var labName = fmt.Sprintf("bgp%d", os.Getpid())

func TestMain(m *testing.M) {
	sweepDeadLabs()
	os.Exit(m.Run())
}

// sweepDeadLabs removes what earlier test processes that died left.
func sweepDeadLabs() {
	if err := lab.SweepDeadRuns(regexp.MustCompile(`^flab-bgp(\d+)-`)); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// upTwoNodeToR brings up a copy of the two-node-tor topology under this
// process's own name, with edit applied to each node's flatnet.yaml.
func upTwoNodeToR(t *testing.T, edit func(node, conf string) string) *lab.Lab {
	t.Helper()
	harness.Require(t, "ip", "ping", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", harness.Bin("flatnet-lab"))
	src := filepath.Join(harness.Root(), "test", "topologies", "two-node-tor")
	dir := t.TempDir()
	// FRR's daemons run as the frr user and must reach their state directory.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-r", src+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("copy topology: %v %s", err, out)
	}
	file := filepath.Join(dir, "two-node-tor.clab.yml")
	rewrite(t, file, func(s string) string { return strings.Replace(s, "name: two-node-tor", "name: "+labName, 1) })
	for _, n := range []string{"node1", "node2"} {
		rewrite(t, filepath.Join(dir, n, "flatnet.yaml"), func(s string) string { return edit(n, s) })
	}
	topo, err := topology.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	l := &lab.Lab{T: topo, Bin: filepath.Join(harness.Root(), "bin"), StateDir: filepath.Join(dir, "state"), Log: testWriter{t}}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"node1", "node2"} {
				b, _ := os.ReadFile(filepath.Join(dir, "state", n, "agent.log"))
				t.Logf("%s agent log (tail):\n%s", n, tail(string(b), 40))
			}
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

func rewrite(t *testing.T, path string, fn func(string) string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(fn(string(b))), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// eventually waits for cond, failing t after timeout with what and the last detail.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var detail string
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, detail = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still not: %s\n%s", timeout, what, detail)
		}
	}
}

// routes returns `ip route show` of a family in a namespace.
func routes(l *lab.Lab, node string, args ...string) string {
	out, _ := l.Exec(l.NS(node), append([]string{"ip", "route", "show"}, args...)...)
	return out
}

func hasRoute(l *lab.Lab, node, prefix, want string) (bool, string) {
	out := routes(l, node, prefix)
	return strings.Contains(out, want), fmt.Sprintf("%s: ip route show %s:\n%s", node, prefix, out)
}

func lacksRoute(l *lab.Lab, node, prefix string, args ...string) (bool, string) {
	out := routes(l, node, append([]string{"exact", prefix}, args...)...)
	return strings.TrimSpace(out) == "", fmt.Sprintf("%s: ip route show exact %s %v:\n%s", node, prefix, args, out)
}

// blockOf returns the block a node announces.
func blockOf(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	var block string
	eventually(t, 30*time.Second, node+" announces a block", func() (bool, string) {
		st, err := l.AgentStatus(context.Background(), node)
		if err != nil {
			return false, err.Error()
		}
		for _, a := range st.GetAdverts() {
			if strings.HasSuffix(a.GetPrefix(), "/26") {
				block = a.GetPrefix()
				return true, ""
			}
		}
		return false, fmt.Sprint(st.GetAdverts())
	})
	return block
}

func peerState(l *lab.Lab, node string) (string, uint64) {
	st, err := l.AgentStatus(context.Background(), node)
	if err != nil || len(st.GetPeers()) != 1 {
		return fmt.Sprint(err), 0
	}
	return st.GetPeers()[0].GetState(), st.GetPeers()[0].GetRejected()
}

func vtyshConfig(t *testing.T, l *lab.Lab, lines ...string) {
	t.Helper()
	args := []string{"--vty_socket", filepath.Join(l.StateDir, "tor", "frr"), "-c", "configure terminal"}
	for _, line := range lines {
		args = append(args, "-c", line)
	}
	if out, err := exec.Command("vtysh", args...).CombinedOutput(); err != nil {
		t.Fatalf("vtysh %v: %v\n%s", lines, err, out)
	}
}

func TestPrivilegedTwoNodesAndFRRToR(t *testing.T) {
	// node2 takes at most 40 prefixes from the ToR, for the max-prefix case.
	l := upTwoNodeToR(t, func(node, conf string) string {
		if node == "node2" {
			return strings.Replace(conf, "maxPrefixes: 1000", "maxPrefixes: 40", 1)
		}
		return conf
	})
	ctx := context.Background()
	pod1, err := l.AddPod(ctx, "node1", "a")
	if err != nil {
		t.Fatal(err)
	}
	pod2, err := l.AddPod(ctx, "node2", "b")
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := blockOf(t, l, "node1"), blockOf(t, l, "node2")

	// Sessions established, with MD5 (FRR would refuse them without).
	for _, n := range []string{"node1", "node2"} {
		eventually(t, 30*time.Second, n+"'s session to the ToR established", func() (bool, string) {
			s, _ := peerState(l, n)
			return s == "established", s
		})
	}
	// FRR installed each node's block via that node; each node installed the
	// other's via the ToR, with flatnet's protocol, and a blackhole over its own.
	eventually(t, 30*time.Second, "routes in every kernel", func() (bool, string) {
		for _, c := range []struct{ node, prefix, want string }{
			{"tor", b1, "via 10.0.1.2 dev eth1 proto bgp"},
			{"tor", b2, "via 10.0.2.2 dev eth2 proto bgp"},
			{"node1", b2, "via 10.0.1.1 dev eth1 proto 75"},
			{"node2", b1, "via 10.0.2.1 dev eth1 proto 75"},
			{"node1", b1, "blackhole " + b1 + " proto 75"},
		} {
			if ok, detail := hasRoute(l, c.node, c.prefix, c.want); !ok {
				return false, detail
			}
		}
		return true, ""
	})
	if err := pingFrom(l, pod1.NS, pod2.Addrs[0]); err != nil {
		t.Fatalf("pod on node1 -> pod on node2: %v", err)
	}

	t.Run("drift is repaired", func(t *testing.T) {
		if _, err := l.Exec(l.NS("node1"), "ip", "route", "del", b2, "proto", "75"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the deleted route back", func() (bool, string) {
			return hasRoute(l, "node1", b2, "proto 75")
		})
	})

	t.Run("planned restart keeps traffic flowing", func(t *testing.T) {
		// 10 ms pings from node2's pod to node1's pod across the restart of node1's agent.
		ping := exec.Command("ip", "netns", "exec", pod2.NS, "ping", "-i", "0.01", "-w", "6", "-q", pod1.Addrs[0].String())
		var out strings.Builder
		ping.Stdout, ping.Stderr = &out, &out
		if err := ping.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		done := make(chan error, 1)
		go func() { done <- l.RestartAgent(ctx, "node1", false) }()
		// While node1's agent is away, the ToR and node2 keep its block.
		for i := 0; i < 20; i++ {
			if ok, detail := hasRoute(l, "tor", b1, "via 10.0.1.2"); !ok {
				t.Errorf("during the restart the ToR lost node1's block: %s", detail)
				break
			}
			if ok, detail := hasRoute(l, "node2", b1, "proto 75"); !ok {
				t.Errorf("during the restart node2 lost node1's block: %s", detail)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		_ = ping.Wait()
		t.Logf("ping every 10 ms across a planned restart of node1's agent: %s", summary(out.String()))
		eventually(t, 30*time.Second, "node1 established again", func() (bool, string) {
			s, _ := peerState(l, "node1")
			return s == "established", s
		})
	})

	t.Run("kill -9 leaves the kernel as it was", func(t *testing.T) {
		before := routes(l, "node1", "proto", "75")
		b, err := os.ReadFile(filepath.Join(l.StateDir, "node1", "agent.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for syscall.Kill(pid, 0) == nil {
			time.Sleep(10 * time.Millisecond)
		}
		if after := routes(l, "node1", "proto", "75"); after != before {
			t.Errorf("kill -9 changed node1's routes:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if err := pingFrom(l, pod1.NS, pod2.Addrs[0]); err != nil {
			t.Errorf("with node1's agent dead, pods lost each other: %v", err)
		}
		if err := l.RestartAgent(ctx, "node1", true); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "node1 established after kill -9", func() (bool, string) {
			s, _ := peerState(l, "node1")
			return s == "established", s
		})
	})

	t.Run("a released block leaves the other node and the ToR", func(t *testing.T) {
		if err := l.DelPod(ctx, "node2", "b"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "node2's block withdrawn everywhere", func() (bool, string) {
			if ok, d := lacksRoute(l, "node1", b2, "proto", "75"); !ok {
				return false, d
			}
			return lacksRoute(l, "tor", b2)
		})
		if pod2, err = l.AddPod(ctx, "node2", "b"); err != nil {
			t.Fatal(err)
		}
		b2 = blockOf(t, l, "node2")
		eventually(t, 30*time.Second, "node2's block back on node1", func() (bool, string) {
			return hasRoute(l, "node1", b2, "proto 75")
		})
	})

	t.Run("hostile announcements are not installed", func(t *testing.T) {
		own := netip.MustParsePrefix(b1)
		inside := netip.PrefixFrom(own.Addr(), 27).String() // more specific than node1's block
		vtyshConfig(t, l, "router bgp 65000", "no bgp network import-check", "address-family ipv4 unicast",
			"network "+inside, "network 0.0.0.0/0", "network 192.0.2.0/24")
		// FRR announces them: wait until node1 has rejected three.
		eventually(t, 30*time.Second, "node1 rejects the hostile prefixes", func() (bool, string) {
			s, rejected := peerState(l, "node1")
			return rejected >= 3, fmt.Sprintf("state %s, rejected %d", s, rejected)
		})
		for _, p := range []string{inside, "0.0.0.0/0", "192.0.2.0/24"} {
			if ok, d := lacksRoute(l, "node1", p, "proto", "75"); !ok {
				t.Errorf("node1 installed a hostile %s: %s", p, d)
			}
		}
		for _, p := range []string{"0.0.0.0/0", "192.0.2.0/24"} {
			if ok, d := lacksRoute(l, "node2", p, "proto", "75"); !ok {
				t.Errorf("node2 installed a hostile %s: %s", p, d)
			}
		}
		if err := pingFrom(l, pod2.NS, pod1.Addrs[0]); err != nil {
			t.Errorf("node1's pod unreachable from node2 after the hostile announcements: %v", err)
		}

		// More prefixes than node2 takes: its session is shut down and none of
		// the flood is installed.
		lines := []string{"router bgp 65000", "address-family ipv4 unicast"}
		for i := range 50 {
			lines = append(lines, fmt.Sprintf("network 10.244.200.%d/32", i))
		}
		vtyshConfig(t, l, lines...)
		eventually(t, 30*time.Second, "node2's session shut down over the limit", func() (bool, string) {
			s, _ := peerState(l, "node2")
			return s == "prefix-limit", s
		})
		out := routes(l, "node2", "proto", "75")
		if n := strings.Count(out, "10.244.200."); n == 40 || n > 40 {
			t.Errorf("node2 installed %d of the 50 flood prefixes:\n%s", n, out)
		}
		t.Logf("node2 after the flood: %d of the flood's prefixes in its kernel (limit 40)", strings.Count(out, "10.244.200."))

		// One warning for the limit (GoBGP's own, one per UPDATE over the
		// limit, are at debug); one per reason for node1's rejections, none
		// for the ToR echoing routes of the nodes' AS back (AS loop).
		log1, log2 := agentLog(t, l, "node1"), agentLog(t, l, "node2")
		if n := strings.Count(log2, `level=WARN msg="prefix limit reached"`); n != 0 {
			t.Errorf("node2 logged GoBGP's prefix limit warning %d times, want 0 (ours says it once)", n)
		}
		if n := strings.Count(log2, "exceeded its prefix limit"); n != 1 {
			t.Errorf("node2 logged its peer's prefix limit %d times, want 1", n)
		}
		for _, reason := range []string{"default route", "overlaps a block", "outside the pod pools"} {
			if n := len(grepLines(log1, "level=WARN", "bgp route rejected", reason)); n != 1 {
				t.Errorf("node1 logged %d rejections for %q, want 1:\n%s", n, reason, strings.Join(grepLines(log1, "bgp route rejected"), "\n"))
			}
		}
		t.Logf("node1's warnings:\n%s", strings.Join(grepLines(log1, "level=WARN"), "\n"))
	})
}

func pingFrom(l *lab.Lab, ns string, dst netip.Addr) error {
	_, err := l.Exec(ns, "ping", "-c", "1", "-W", "2", dst.String())
	return err
}

// summary picks the loss line out of ping's output.
func summary(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "packet loss") {
			return strings.TrimSpace(line)
		}
	}
	return strings.TrimSpace(out)
}

// agentLog is a node's agent log so far.
func agentLog(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.StateDir, node, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grepLines returns the lines of s that contain every one of parts.
func grepLines(s string, parts ...string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}
