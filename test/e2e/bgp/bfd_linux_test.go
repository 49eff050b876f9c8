package bgp_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/topology"
	"github.com/flatnet-io/flatnet/test/harness"
)

// The BFD lab: two flatnet nodes and an FRR top-of-rack router (bgpd, bfdd)
// on one L2 segment. The nodes are an iBGP mesh with BFD on (bgp.meshBFD),
// and each has an eBGP session with BFD to the ToR. Hold times are 9 s:
// every failure below is detected by BFD (300 ms x 3) long before. (FRR's
// `neighbor X bfd check-control-plane-failure` would make the ToR ignore BFD
// for a graceful-restart peer whose BFD shares fate with its control plane,
// as flatnet's does: BFD down would then cost the hold time.)
//
//	           sw (bridge)
//	 eth1 /       | eth2      \ eth3
//	tor .254    node1 .1    node2 .2      10.0.0.0/24
const bfdTopology = `name: LAB
topology:
  nodes:
    sw:
      kind: linux
      image: bridge
      labels: {flatnet.io/role: host}
      exec:
        - ip link add br0 type bridge
        - ip link set eth1 master br0
        - ip link set eth2 master br0
        - ip link set eth3 master br0
        - ip link set br0 up
    tor:
      kind: linux
      image: quay.io/frrouting/frr:8.4.0
      binds: ["tor/frr.conf:/etc/frr/frr.conf", "tor/daemons:/etc/frr/daemons"]
      exec:
        - ip addr add 10.0.0.254/24 dev eth1
        - sysctl -qw net.ipv4.ip_forward=1
    node1:
      kind: linux
      image: ghcr.io/flatnet-io/flatnet-node:latest
      binds: ["node1/flatnet.yaml:/etc/flatnet/flatnet.yaml"]
      exec: ["ip addr add 10.0.0.1/24 dev eth1"]
    node2:
      kind: linux
      image: ghcr.io/flatnet-io/flatnet-node:latest
      binds: ["node2/flatnet.yaml:/etc/flatnet/flatnet.yaml"]
      exec: ["ip addr add 10.0.0.2/24 dev eth1"]
  links:
    - endpoints: ["sw:eth1", "tor:eth1"]
    - endpoints: ["sw:eth2", "node1:eth1"]
    - endpoints: ["sw:eth3", "node2:eth1"]
`

const bfdTorConfig = `frr defaults datacenter
hostname tor
log stdout informational
!
router bgp 65000
 bgp router-id 10.0.0.254
 no bgp ebgp-requires-policy
 bgp graceful-restart
 neighbor nodes peer-group
 neighbor nodes remote-as 64512
 neighbor nodes timers 3 9
 neighbor nodes bfd
 neighbor 10.0.0.1 peer-group nodes
 neighbor 10.0.0.2 peer-group nodes
 !
 address-family ipv4 unicast
  neighbor nodes activate
 exit-address-family
!
`

const bfdTorDaemons = "zebra=yes\nbgpd=yes\nbfdd=yes\nvtysh_enable=yes\n"

func bfdNodeConfig(addr string) string {
	return `log: {level: info, format: text}
datastore:
  type: file
  file: {dir: /var/lib/flatnet/ipam, fsync: false}
ipam:
  pools:
    - {name: pods-v4, cidr: 10.244.0.0/16, blockSize: 26}
  blockReleaseGrace: 0s
bgp:
  enabled: true
  asn: 64512
  nodeIPv4: ` + addr + `
  mesh: true
  meshHoldTime: 9s
  meshKeepaliveInterval: 3s
  meshBFD: {enabled: true}
  convergeTimeout: 10s
  gracefulRestart: {enabled: true, restartTime: 60s}
  peers:
    - name: tor
      address: 10.0.0.254
      asn: 65000
      holdTime: 9s
      keepaliveInterval: 3s
      bfd: {enabled: true}
`
}

// bfdHold is the lab's hold time: what a failure would cost without BFD.
const bfdHold = 9 * time.Second

// bfdLab is the BFD lab, up, with a pod on each node.
type bfdLab struct {
	*lab.Lab
	t              *testing.T
	pod1, pod2     *lab.Pod
	block1, block2 string
}

func upBFDLab(t *testing.T) *bfdLab {
	t.Helper()
	harness.Require(t, "ip", "ping", "nft", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "/usr/lib/frr/bfdd")
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // FRR runs as frr
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"lab.clab.yml":       strings.Replace(bfdTopology, "name: LAB", "name: "+labName+"-bfd", 1),
		"tor/frr.conf":       bfdTorConfig,
		"tor/daemons":        bfdTorDaemons,
		"node1/flatnet.yaml": bfdNodeConfig("10.0.0.1"),
		"node2/flatnet.yaml": bfdNodeConfig("10.0.0.2"),
	}
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	topo, err := topology.Load(filepath.Join(dir, "lab.clab.yml"))
	if err != nil {
		t.Fatal(err)
	}
	l := &lab.Lab{T: topo, Bin: filepath.Join(harness.Root(), "bin"), StateDir: filepath.Join(dir, "state"), Log: testWriter{t}}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"node1", "node2"} {
				b, _ := os.ReadFile(filepath.Join(l.StateDir, n, "agent.log"))
				t.Logf("%s agent log (tail):\n%s", n, tail(string(b), 60))
			}
			out, _ := l.Vtysh("tor", "show bfd peers brief")
			t.Logf("tor: show bfd peers brief:\n%s", out)
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	b := &bfdLab{Lab: l, t: t}
	if b.pod1, err = l.AddPod(ctx, "node1", "a"); err != nil {
		t.Fatal(err)
	}
	if b.pod2, err = l.AddPod(ctx, "node2", "b"); err != nil {
		t.Fatal(err)
	}
	b.block1, b.block2 = blockOf(t, l, "node1"), blockOf(t, l, "node2")
	return b
}

// steady waits until every session is established with BFD up, on both
// ends, and each node's block is routed by the ToR and the other node.
func (b *bfdLab) steady(timeout time.Duration) {
	b.t.Helper()
	eventually(b.t, timeout, "sessions established with BFD up, routes everywhere", func() (bool, string) {
		for _, n := range []string{"node1", "node2"} {
			if ok, d := b.sessionsUp(n); !ok {
				return false, d
			}
		}
		for _, addr := range []string{"10.0.0.1", "10.0.0.2"} {
			if st := b.torBFD(addr); st != "up" {
				return false, fmt.Sprintf("tor: BFD with %s %q", addr, st)
			}
		}
		return b.routed("node1")
	})
}

// sessionsUp says whether node's sessions are all established with BFD up.
func (b *bfdLab) sessionsUp(node string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := b.AgentStatus(ctx, node)
	if err != nil {
		return false, fmt.Sprintf("%s: %v", node, err)
	}
	if len(st.GetPeers()) != 2 {
		return false, fmt.Sprintf("%s: peers %v", node, st.GetPeers())
	}
	for _, p := range st.GetPeers() {
		if p.GetState() != "established" || p.GetBfd() != "up" {
			return false, fmt.Sprintf("%s: peer %s %s, BFD %q", node, p.GetName(), p.GetState(), p.GetBfd())
		}
	}
	return true, ""
}

// routed says whether node's block is routed by the ToR and by the other
// node, via node.
func (b *bfdLab) routed(node string) (bool, string) {
	block, addr, other := b.block1, "10.0.0.1", "node2"
	if node == "node2" {
		block, addr, other = b.block2, "10.0.0.2", "node1"
	}
	if ok, d := hasRoute(b.Lab, "tor", block, "via "+addr); !ok {
		return false, d
	}
	return hasRoute(b.Lab, other, block, "via "+addr)
}

// withdrawn says whether node1's block is gone from the ToR and node2.
func (b *bfdLab) withdrawn() (bool, string) {
	if ok, d := lacksRoute(b.Lab, "tor", b.block1); !ok {
		return false, d
	}
	return lacksRoute(b.Lab, "node2", b.block1, "proto", "75")
}

// torBFD is the ToR's BFD session state with addr: "up", "down", ...
func (b *bfdLab) torBFD(addr string) string {
	var peers []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if err := b.VtyshJSON("tor", "show bfd peers json", &peers); err != nil {
		return err.Error()
	}
	for _, p := range peers {
		if p.Peer == addr {
			return p.Status
		}
	}
	return "none"
}

// agentPid is a node's flatnet-agent process.
func (b *bfdLab) agentPid(node string) int {
	b.t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.StateDir, node, "agent.pid"))
	if err != nil {
		b.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		b.t.Fatal(err)
	}
	return pid
}

// cut drops every packet in and out of node's link (nftables on eth1's
// ingress and egress, below the IP stack: to both ends it looks like a dead
// link, not a refused packet); mend removes the drop.
func (b *bfdLab) cut(node string) {
	b.t.Helper()
	rules := `table netdev flatnet_fault {
  chain in { type filter hook ingress device "eth1" priority 0; policy drop; }
  chain out { type filter hook egress device "eth1" priority 0; policy drop; }
}
`
	cmd := exec.Command("ip", "netns", "exec", b.NS(node), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Fatalf("cut %s's link: %v\n%s", node, err, out)
	}
}

func (b *bfdLab) mend(node string) {
	b.t.Helper()
	if _, err := b.Exec(b.NS(node), "nft", "delete", "table", "netdev", "flatnet_fault"); err != nil {
		b.t.Fatalf("mend %s's link: %v", node, err)
	}
}

// until polls cond every 20 ms until it holds and returns when it first
// did, failing the test after timeout.
func until(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Time {
	t.Helper()
	var detail string
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if ok, detail = cond(); ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still not: %s\n%s", timeout, what, detail)
		}
	}
}

func ms(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// TestPrivilegedBFD runs BFD against FRR's bfdd and between two flatnet
// nodes: failure detection, recovery after a freeze, a partition and a
// flapping link, a planned restart that keeps traffic, and node death. It
// reports the durations it measures; the bounds it asserts are generous
// (each far below what the same failure costs without BFD, or cost before
// the fixes: 30 s and more), never tight.
func TestPrivilegedBFD(t *testing.T) {
	b := upBFDLab(t)
	b.steady(time.Minute)
	if err := pingFrom(b.Lab, b.pod2.NS, b.pod1.Addrs[0]); err != nil {
		t.Fatalf("pod on node2 -> pod on node1: %v", err)
	}
	// The ToR sends each node the other's block back through their AS (an
	// AS loop): rejected and counted as such, and expected, so no warning.
	eventually(t, 10*time.Second, "node1 counts the ToR's echo as rejected", func() (bool, string) {
		st, err := b.AgentStatus(t.Context(), "node1")
		if err != nil {
			return false, err.Error()
		}
		for _, p := range st.GetPeers() {
			if p.GetName() == "tor" {
				return p.GetRejected() >= 1 && p.GetAccepted()+p.GetRejected() == p.GetReceived(), fmt.Sprint(p)
			}
		}
		return false, fmt.Sprint(st.GetPeers())
	})
	for _, n := range []string{"node1", "node2"} {
		if lines := grepLines(agentLog(t, b.Lab, n), "level=WARN", "rejected"); len(lines) > 0 {
			t.Errorf("%s warns of rejected routes the ToR echoes:\n%s", n, strings.Join(lines, "\n"))
		}
	}

	// A node frozen for 3 s (SIGSTOP, SIGCONT): the ToR (bfdd) and node2
	// (GoBGP's BFD) see BFD go down and withdraw its block within about a
	// second; once it runs again, its sessions must come back within
	// seconds (GoBGP held a reset peer idle for 30 s, and a Cease queued
	// meanwhile killed the next session).
	t.Run("frozen agent: withdrawn by BFD, back within seconds", func(t *testing.T) {
		b.t = t
		pid := b.agentPid("node1")
		start := time.Now()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		cont := sync.OnceFunc(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
		defer cont()
		gone := until(t, bfdHold, "node1's block withdrawn by the ToR and node2 while node1 is frozen", b.withdrawn)
		time.Sleep(time.Until(start.Add(3 * time.Second)))
		resumed := time.Now()
		cont()
		back := until(t, 20*time.Second, "node1's block back at the ToR and node2", func() (bool, string) { return b.routed("node1") })
		up := until(t, 20*time.Second, "node1's sessions established with BFD up", func() (bool, string) { return b.sessionsUp("node1") })
		t.Logf("frozen 3s: withdrawn %s after SIGSTOP (BFD 300ms x 3; hold time %v); after SIGCONT, routes back in %s, every session and BFD up in %s",
			ms(gone.Sub(start)), bfdHold, ms(back.Sub(resumed)), ms(up.Sub(resumed)))
		if d := back.Sub(resumed); d > 10*time.Second {
			t.Errorf("node1's routes back %s after it resumed; want seconds (bound 10s)", ms(d))
		}
	})

	// A 3 s partition of node1's link.
	t.Run("3s partition: back within seconds of the link", func(t *testing.T) {
		b.t = t
		b.steady(time.Minute)
		start := time.Now()
		b.cut("node1")
		mended := false
		defer func() {
			if !mended {
				b.mend("node1")
			}
		}()
		gone := until(t, bfdHold, "node1's block withdrawn by the ToR and node2 during the partition", b.withdrawn)
		time.Sleep(time.Until(start.Add(3 * time.Second)))
		healed := time.Now()
		b.mend("node1")
		mended = true
		back := until(t, 20*time.Second, "node1's block back at the ToR and node2", func() (bool, string) { return b.routed("node1") })
		up := until(t, 20*time.Second, "node1's sessions established with BFD up", func() (bool, string) { return b.sessionsUp("node1") })
		t.Logf("3s partition: withdrawn %s after the cut; after the link came back, routes back in %s, every session and BFD up in %s",
			ms(gone.Sub(start)), ms(back.Sub(healed)), ms(up.Sub(healed)))
		if d := back.Sub(healed); d > 10*time.Second {
			t.Errorf("node1's routes back %s after the link came back; want seconds (bound 10s)", ms(d))
		}
	})

	// A link that flaps: five times down for 1.5 s, up for 1.5 s. At the
	// end, everything settles within seconds and nothing is left stale.
	t.Run("flapping link settles", func(t *testing.T) {
		b.t = t
		b.steady(time.Minute)
		for range 5 {
			b.cut("node1")
			time.Sleep(1500 * time.Millisecond)
			b.mend("node1")
			time.Sleep(1500 * time.Millisecond)
		}
		last := time.Now().Add(-1500 * time.Millisecond)
		back := until(t, 20*time.Second, "node1's block back at the ToR and node2", func() (bool, string) { return b.routed("node1") })
		up := until(t, 30*time.Second, "node1's sessions established with BFD up", func() (bool, string) { return b.sessionsUp("node1") })
		b.steady(30 * time.Second)
		if err := pingFrom(b.Lab, b.pod2.NS, b.pod1.Addrs[0]); err != nil {
			t.Errorf("pod on node2 -> pod on node1 after the flaps: %v", err)
		}
		t.Logf("5 flaps (1.5s down, 1.5s up): after the last, routes back in %s, every session and BFD up in %s",
			ms(back.Sub(last)), ms(up.Sub(last)))
		if d := up.Sub(last); d > 15*time.Second {
			t.Errorf("node1's sessions up %s after the link's last flap; want seconds (bound 15s)", ms(d))
		}
	})

	// A planned restart (SIGTERM, new agent) stops BFD with the agent: the
	// ToR and node2 must take it for the restart it is and keep node1's
	// block throughout.
	t.Run("planned restart keeps node1's routes with BFD on", func(t *testing.T) {
		b.t = t
		b.steady(time.Minute)
		ping := exec.Command("ip", "netns", "exec", b.pod2.NS, "ping", "-i", "0.01", "-q", b.pod1.Addrs[0].String())
		var out strings.Builder
		ping.Stdout, ping.Stderr = &out, &out
		if err := ping.Start(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var gaps []string
		stop := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			for {
				if ok, d := b.routed("node1"); !ok {
					mu.Lock()
					gaps = append(gaps, time.Now().Format("15:04:05.000")+" "+d)
					mu.Unlock()
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		time.Sleep(time.Second)
		start := time.Now()
		if err := b.RestartAgent(t.Context(), "node1", false); err != nil {
			t.Fatal(err)
		}
		up := until(t, time.Minute, "node1's sessions established with BFD up after its restart", func() (bool, string) { return b.sessionsUp("node1") })
		time.Sleep(2 * time.Second) // past BFD's detection time after the sessions came back
		close(stop)
		<-watched
		_ = ping.Process.Signal(syscall.SIGINT)
		_ = ping.Wait()
		t.Logf("planned restart of node1's agent with BFD on: sessions and BFD up again after %s; ping every 10 ms node2's pod -> node1's pod: %s",
			ms(up.Sub(start)), summary(out.String()))
		if len(gaps) > 0 {
			t.Errorf("node1's block left the ToR or node2 during its planned restart (%d polls):\n%s", len(gaps), strings.Join(gaps[:min(len(gaps), 10)], "\n"))
		}
	})

	// Node death (its traffic dropped, its processes killed, as a machine
	// that loses power): BFD withdraws its block from the ToR and from
	// node2 in about a second; the hold time (9 s) would take nine.
	t.Run("node death: withdrawn by BFD in about a second", func(t *testing.T) {
		b.t = t
		b.steady(time.Minute)
		start := time.Now()
		if err := b.StopNode("node1"); err != nil {
			t.Fatal(err)
		}
		var torGone, node2Gone time.Duration
		until(t, bfdHold+5*time.Second, "node1's block withdrawn by the ToR and node2", func() (bool, string) {
			if ok, _ := lacksRoute(b.Lab, "tor", b.block1); ok && torGone == 0 {
				torGone = time.Since(start)
			}
			if ok, _ := lacksRoute(b.Lab, "node2", b.block1, "proto", "75"); ok && node2Gone == 0 {
				node2Gone = time.Since(start)
			}
			return torGone > 0 && node2Gone > 0, routes(b.Lab, "tor", b.block1) + routes(b.Lab, "node2", b.block1)
		})
		t.Logf("node1 dead: its block withdrawn by the ToR (bfdd) after %s, by node2 (flatnet's BFD) after %s; BFD 300ms x 3, hold time %v",
			ms(torGone), ms(node2Gone), bfdHold)
		for who, d := range map[string]time.Duration{"the ToR": torGone, "node2": node2Gone} {
			if d > bfdHold/2 {
				t.Errorf("%s withdrew node1's block after %s: that is not BFD's doing (bound %v, half the hold time)", who, ms(d), bfdHold/2)
			}
		}
	})
}
