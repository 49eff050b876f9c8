package bgpbench_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/flatnet-io/flatnet/dataplane"
)

// The route-install lab: an injector (GoBGP, AS 65100) with one link to a
// flatnet node (AS 64512) and one to an FRR node (AS 65002), eBGP on both;
// kb and kr are bare namespaces, for `ip -batch` and for flatnet's route
// reconciler on its own (no BGP).
//
//	fln 10.0.1.2 ── 10.0.1.1 inj 10.0.2.1 ── 10.0.2.2 frr     kb, kr: 10.0.3.1/24
const installTopology = `name: LAB
topology:
  nodes:
    inj:
      kind: linux
      image: gobgp-injector
      labels: {flatnet.io/role: host}
      exec:
        - ip addr add 10.0.1.1/24 dev eth1
        - ip addr add 10.0.2.1/24 dev eth2
    fln:
      kind: linux
      image: ghcr.io/flatnet-io/flatnet-node:latest
      binds: ["fln/flatnet.yaml:/etc/flatnet/flatnet.yaml"]
      exec: ["ip addr add 10.0.1.2/24 dev eth1"]
    frr:
      kind: linux
      image: quay.io/frrouting/frr:8.4.0
      binds: ["frr/frr.conf:/etc/frr/frr.conf"]
      exec: ["ip addr add 10.0.2.2/24 dev eth1"]
    kb:
      kind: linux
      image: kernel-only
      labels: {flatnet.io/role: host}
      exec:
        - ip link add kb0 type veth peer name kb1
        - ip link set kb0 up
        - ip link set kb1 up
        - ip addr add 10.0.3.1/24 dev kb0
    kr:
      kind: linux
      image: kernel-only
      labels: {flatnet.io/role: host}
      exec:
        - ip link add kr0 type veth peer name kr1
        - ip link set kr0 up
        - ip link set kr1 up
        - ip addr add 10.0.3.1/24 dev kr0
  links:
    - endpoints: ["inj:eth1", "fln:eth1"]
    - endpoints: ["inj:eth2", "frr:eth1"]
`

// The flatnet node takes everything in 100.64.0.0/10 from the injector, with
// no prefix limit.
const installAgentConfig = `log: {level: info, format: text}
datastore:
  type: file
  file: {dir: /var/lib/flatnet/ipam, fsync: false}
ipam:
  pools:
    - {name: pods-v4, cidr: 10.244.0.0/16, blockSize: 26}
bgp:
  enabled: true
  asn: 64512
  nodeIPv4: 10.0.1.2
  mesh: false
  convergeTimeout: 10s
  peers:
    - name: injector
      address: 10.0.1.1
      asn: 65100
      maxPrefixes: 0
      import:
        allow: [100.64.0.0/10]
`

const installFRRConfig = `frr defaults datacenter
hostname frr
log stdout informational
!
router bgp 65002
 bgp router-id 10.0.2.2
 no bgp ebgp-requires-policy
 neighbor 10.0.2.1 remote-as 65100
 !
 address-family ipv4 unicast
  neighbor 10.0.2.1 activate
 exit-address-family
!
`

var (
	injectorSpecBase = injectorSpec{ASN: 65100, RouterID: netip.MustParseAddr("10.0.1.1"), First: netip.MustParseAddr("100.64.0.0")}
	flatnetNode      = receiver{name: "flatnet", node: "fln", addr: netip.MustParseAddr("10.0.1.2"), asn: 64512, proto: protoFlatnet}
	frrNode          = receiver{name: "frr", node: "frr", addr: netip.MustParseAddr("10.0.2.2"), asn: 65002, proto: protoBGP}
	// installRuns alternates which receiver goes first, run after run of
	// each size.
	installRuns = map[int]int{}
)

// pollPeriod is how often a receiver's progress is looked at.
const pollPeriod = 20 * time.Millisecond

// BenchmarkRouteInstall announces 10k and 100k /32s from a preloaded GoBGP
// injector to a flatnet node and to an FRR node, one after the other in the
// same lab (the first one's daemons are killed before the second's session
// starts, so they do not share the CPU), and installs the same routes with
// `ip -batch` in a bare namespace. Each is timed from the injector's session
// reaching Established (when GoBGP has queued the whole table for the peer:
// its first UPDATE) to the last route in the receiving kernel, from the
// kernel's route events, or, for ip -batch, the command's run time.
//
// The same routes also go into a bare namespace through flatnet's route
// reconciler alone (dataplane.Reconciler, in this process: SetRoutes then
// Sync), which tells flatnet's BGP side from its kernel side.
//
// Metrics, medians over b.N runs: <who>-ms and <who>-routes/s, reconciler-ms;
// flatnet/frr and flatnet/ip-batch, ratios of the times (below 1: flatnet is
// faster); the flatnet agent's RSS with every route installed (agent-rss-MiB)
// and its peak (agent-peak-rss-MiB), and FRR's bgpd + zebra (frr-rss-MiB).
func BenchmarkRouteInstall(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			requireLab(b)
			var runs []installResult
			for range b.N {
				runs = append(runs, installOnce(b, n))
			}
			metric := func(unit string, f func(installResult) float64) {
				var xs []float64
				for _, r := range runs {
					xs = append(xs, f(r))
				}
				b.ReportMetric(median(xs), unit)
			}
			perSec := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
			metric("flatnet-ms", func(r installResult) float64 { return ms(r.flatnet.last) })
			metric("frr-ms", func(r installResult) float64 { return ms(r.frr.last) })
			metric("ip-batch-ms", func(r installResult) float64 { return ms(r.ipBatch) })
			metric("reconciler-ms", func(r installResult) float64 { return ms(r.reconciler) })
			metric("flatnet-routes/s", func(r installResult) float64 { return perSec(r.flatnet.last) })
			metric("frr-routes/s", func(r installResult) float64 { return perSec(r.frr.last) })
			metric("ip-batch-routes/s", func(r installResult) float64 { return perSec(r.ipBatch) })
			metric("flatnet/frr", func(r installResult) float64 { return r.flatnet.last.Seconds() / r.frr.last.Seconds() })
			metric("flatnet/ip-batch", func(r installResult) float64 { return r.flatnet.last.Seconds() / r.ipBatch.Seconds() })
			perRoute := func(mib float64) float64 { return mib * (1 << 20) / float64(n) }
			metric("agent-rss-MiB", func(r installResult) float64 { return r.agentMiB })
			metric("agent-bytes/route", func(r installResult) float64 { return perRoute(r.agentMiB) })
			metric("frr-bytes/route", func(r installResult) float64 { return perRoute(r.bgpdMiB + r.zebraMiB) })
			metric("agent-peak-rss-MiB", func(r installResult) float64 { return r.agentPeakMiB })
			metric("frr-rss-MiB", func(r installResult) float64 { return r.bgpdMiB + r.zebraMiB })
			b.ReportMetric(0, "ns/op") // the wall time of a run is mostly set-up
		})
	}
}

// receiver is a node the injector announces to.
type receiver struct {
	name, node string
	addr       netip.Addr
	asn        uint32
	proto      uint8 // of the routes it installs
}

// installResult is one run's figures.
type installResult struct {
	flatnet, frr           received
	ipBatch, reconciler    time.Duration
	agentMiB, agentPeakMiB float64
	bgpdMiB, zebraMiB      float64
}

// received is how one receiver took the routes, from Established.
type received struct {
	first, last time.Duration    // to the first and to the last route in its kernel
	confirm     time.Duration    // from OpenConfirm to Established at the injector
	quartiles   [3]time.Duration // to a quarter, half and three quarters of the routes
	// lostEvents: route events were dropped, so last is from counting the
	// table, whose resolution is pollPeriod plus the slowest count.
	lostEvents  bool
	slowestPoll time.Duration
}

func (r received) String() string {
	s := fmt.Sprintf("%s (first route %s, 25/50/75%% at %s/%s/%s; OpenConfirm→Established %s)",
		r.last.Round(time.Millisecond), r.first.Round(time.Millisecond), r.quartiles[0].Round(time.Millisecond),
		r.quartiles[1].Round(time.Millisecond), r.quartiles[2].Round(time.Millisecond), r.confirm.Round(time.Millisecond))
	if r.lostEvents {
		s += fmt.Sprintf(" [route events lost: last from counting the table, counts ≤%s]", r.slowestPoll.Round(time.Millisecond))
	}
	return s
}

func installOnce(b *testing.B, routes int) installResult {
	b.Helper()
	l := upLab(b, installTopology, map[string]string{
		"fln/flatnet.yaml": installAgentConfig,
		"frr/frr.conf":     installFRRConfig,
	})
	defer l.down(b)
	spec := injectorSpecBase
	spec.Routes = routes
	inj := startInjector(b, l.NS("inj"), spec)

	var res installResult
	installRuns[routes]++
	flatnetFirst := installRuns[routes]%2 == 1
	order := []receiver{flatnetNode, frrNode}
	if !flatnetFirst {
		order = []receiver{frrNode, flatnetNode}
	}
	for _, rc := range order {
		got := receive(b, l, inj, rc, routes)
		switch rc.name {
		case "flatnet":
			res.flatnet = got
			res.agentMiB, res.agentPeakMiB = afterFlatnet(b, l, routes)
		case "frr":
			res.frr = got
			res.bgpdMiB, res.zebraMiB = afterFRR(b, l)
		}
	}
	res.ipBatch = ipBatch(b, l, routes)
	res.reconciler = reconcilerInstall(b, l, routes)
	b.Logf("routes=%d (preloaded in %s, %s first): flatnet %s; frr %s; ip -batch %s; reconciler alone %s; RSS agent %.0f MiB (peak %.0f), bgpd %.0f + zebra %.0f MiB",
		routes, inj.loaded, order[0].name, res.flatnet, res.frr, res.ipBatch.Round(time.Millisecond), res.reconciler.Round(time.Millisecond),
		res.agentMiB, res.agentPeakMiB, res.bgpdMiB, res.zebraMiB)
	return res
}

// receive has the injector peer with rc and waits until rc's kernel holds
// every route. Route events give the times; when the event socket overflowed
// it falls back to counting the table every pollPeriod (a count of 100k
// routes takes tens of milliseconds itself). Either way the count is
// confirmed by the kernel's table.
func receive(b *testing.B, l *benchLab, inj *injector, rc receiver, routes int) received {
	b.Helper()
	sock, err := openRouteSocket(l.NS(rc.node), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sock.close()
	if n, err := sock.count(rc.proto); err != nil || n != 0 {
		b.Fatalf("%s: %d routes of protocol %d before the session (%v)", rc.name, n, rc.proto, err)
	}
	watch, err := watchRoutes(l.NS(rc.node), rc.proto)
	if err != nil {
		b.Fatal(err)
	}
	defer watch.close()
	if dir := os.Getenv(envDiag); dir != "" {
		defer perfRecord(b, filepath.Join(dir, fmt.Sprintf("%s-%d.perf", rc.name, routes)), receiverPids(b, l, rc)...)()
	}
	s := inj.peer(b, rc.addr, rc.asn)
	got := received{confirm: s.established.Sub(s.openConfirm)}
	deadline := time.Now().Add(30*time.Second + time.Duration(routes)*time.Millisecond)
	for ; ; time.Sleep(pollPeriod) {
		n, lost, err := watch.seenCount()
		if err != nil {
			b.Fatalf("%s: %v", rc.name, err)
		}
		if lost {
			got.lostEvents = true
			start := time.Now()
			if n, err = sock.count(rc.proto); err != nil {
				b.Fatalf("%s: %v", rc.name, err)
			}
			got.slowestPoll = max(got.slowestPoll, time.Since(start))
			if n >= routes {
				got.last = time.Since(s.established)
				break
			}
		} else if n >= routes {
			times := watch.seenTimes()
			got.last = times[len(times)-1].Sub(s.established)
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d routes in the kernel %s after Established; %s",
				rc.name, n, routes, time.Since(s.established).Round(time.Millisecond), diagnose(l, rc))
		}
	}
	if n, err := sock.count(rc.proto); err != nil || n != routes {
		b.Fatalf("%s: the kernel holds %d routes of protocol %d, want %d (%v)", rc.name, n, rc.proto, routes, err)
	}
	if times := watch.seenTimes(); len(times) > 0 {
		got.first = times[0].Sub(s.established)
		for q := range got.quartiles {
			got.quartiles[q] = times[min(len(times)-1, (q+1)*routes/4-1)].Sub(s.established)
		}
	}
	return got
}

// envDiag names a directory for finding out where the time goes: when set,
// each receiver's daemons are recorded with `perf record -g` while they take
// the routes, into <who>-<routes>.perf, and the agent's log is kept there as
// flatnet-<routes>.log (run with GODEBUG=gctrace=1 to have its GC in it).
const envDiag = "FLATNET_BGPBENCH_DIAG"

// receiverPids are the processes that do a receiver's work.
func receiverPids(b *testing.B, l *benchLab, rc receiver) []int {
	if rc.name == "frr" {
		return []int{l.pidFile(b, "frr/frr/bgpd.pid"), l.pidFile(b, "frr/frr/zebra.pid")}
	}
	return []int{l.pidFile(b, "fln/agent.pid")}
}

// perfRecord starts perf on pids and returns what stops it.
func perfRecord(b *testing.B, file string, pids ...int) func() {
	b.Helper()
	var list []string
	for _, p := range pids {
		list = append(list, strconv.Itoa(p))
	}
	cmd := exec.Command("perf", "record", "-q", "-g", "-F", "499", "-o", file, "-p", strings.Join(list, ","))
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		b.Logf("perf profile of %v: %s", pids, file)
	}
}

// afterFlatnet reads the agent's RSS and its own account of the routes, then
// kills it (the routes stay; it takes no more CPU).
func afterFlatnet(b *testing.B, l *benchLab, routes int) (rss, peak float64) {
	b.Helper()
	pid := l.pidFile(b, "fln/agent.pid")
	rss, peak = rssMiB(b, pid)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := l.AgentStatus(ctx, "fln")
	if err != nil {
		b.Fatalf("flatnet status: %v", err)
	}
	if p := st.GetPeers(); len(p) != 1 || p[0].GetAccepted() != uint64(routes) || st.GetRoutes().GetLearned() != int64(routes) {
		b.Errorf("flatnet status after the install: peers %v, routes %v", p, st.GetRoutes())
	}
	kill(b, pid)
	if dir := os.Getenv(envDiag); dir != "" {
		if log, err := os.ReadFile(filepath.Join(l.StateDir, "fln", "agent.log")); err == nil {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("flatnet-%d.log", routes)), log, 0o644)
		}
	}
	return rss, peak
}

// afterFRR reads bgpd's and zebra's RSS, then kills them.
func afterFRR(b *testing.B, l *benchLab) (bgpd, zebra float64) {
	b.Helper()
	bpid, zpid := l.pidFile(b, "frr/frr/bgpd.pid"), l.pidFile(b, "frr/frr/zebra.pid")
	bgpd, _ = rssMiB(b, bpid)
	zebra, _ = rssMiB(b, zpid)
	kill(b, bpid)
	kill(b, zpid)
	return bgpd, zebra
}

// ipBatch installs the routes with one `ip -batch` in kb and returns its
// run time: each route an acknowledged message, so when it exits they are
// all in.
func ipBatch(b *testing.B, l *benchLab, routes int) time.Duration {
	b.Helper()
	var sb strings.Builder
	for _, p := range hostRoutes(injectorSpecBase.First, routes) {
		fmt.Fprintf(&sb, "route add %s via 10.0.3.2 proto 76\n", p)
	}
	file := filepath.Join(l.dir, "routes.batch")
	if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if out, err := l.Exec(l.NS("kb"), "ip", "-batch", file); err != nil {
		b.Fatalf("ip -batch: %v\n%s", err, tail(out, 5))
	}
	took := time.Since(start)
	sock, err := openRouteSocket(l.NS("kb"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sock.close()
	if n, err := sock.count(76); err != nil || n != routes {
		b.Fatalf("ip -batch: %d of %d routes in the kernel (%v)", n, routes, err)
	}
	return took
}

// diagnose says what a receiver that did not install every route thinks.
func diagnose(l *benchLab, rc receiver) string {
	if rc.name == "frr" {
		out, err := l.Vtysh("frr", "show bgp summary")
		return fmt.Sprintf("FRR: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := l.AgentStatus(ctx, rc.node)
	if err != nil {
		return fmt.Sprintf("agent status: %v", err)
	}
	return fmt.Sprintf("agent: peers %v, routes %v", st.GetPeers(), st.GetRoutes())
}

// reconcilerInstall installs the routes in kr through flatnet's route
// reconciler, without BGP, and returns how long it took from the first
// Upsert until the reconciler had no route pending.
func reconcilerInstall(b *testing.B, l *benchLab, routes int) time.Duration {
	b.Helper()
	h, err := ns.GetNS("/run/netns/" + l.NS("kr"))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	r, err := dataplane.New(dataplane.Options{NetNS: h})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("reconciler: %v", err)
		}
		r.Close()
	}()
	r.MarkConverged()
	gw := []netip.Addr{netip.MustParseAddr("10.0.3.2")}
	start := time.Now()
	for _, p := range hostRoutes(injectorSpecBase.First, routes) {
		if err := r.Upsert(p, gw); err != nil {
			b.Fatal(err)
		}
	}
	for c := r.Counts(); c.Pending > 0 || c.Routes < routes; c = r.Counts() {
		if time.Since(start) > time.Minute {
			b.Fatalf("reconciler: %+v a minute after the first route", c)
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	sock, err := openRouteSocket(l.NS("kr"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer sock.close()
	if n, err := sock.count(protoFlatnet); err != nil || n != routes {
		b.Fatalf("reconciler: %d of %d routes in the kernel (%v)", n, routes, err)
	}
	return took
}
