package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab/netns"
)

// The benchmarks measure the dataplane against the underlay it rides on,
// side by side in one run, on two-node-tor: node1 and its pod send to node2
// and its pod, through the ToR, over the same veth links. Pod traffic takes
// one more veth hop at each end and the nodes' /32 pod routes; nothing else
// (no encapsulation, no NAT). Each iteration measures both paths back to
// back, so drifting load on the machine hits both alike.
//
//	go test -run '^$' -bench . -benchtime 1x -count 5 ./test/e2e/lab/ | tee lab.txt
//	benchstat lab.txt
//
// Each -count is one lab brought up and one measurement (with -benchtime 1x);
// benchstat gives the medians.

// benchLab brings up two-node-tor as the tests do (their /28 blocks do not
// matter here) with one pod a node, and returns the two paths' endpoints.
func benchLab(b *testing.B) (e *env, node1, node2, pod1, pod2 endpoint) {
	b.Helper()
	e = up(b, topologies[0], func(s string) string { return s }, "iperf3")
	e.addPods(b, 1)
	e.waitVerify(b, time.Minute)
	addr := func(ns string) netip.Addr {
		a, err := e.globalAddr(ns)
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	node1 = endpoint{e.NS("node1"), addr(e.NS("node1"))}
	node2 = endpoint{e.NS("node2"), addr(e.NS("node2"))}
	pod1 = endpoint{e.PodNS("node1", "pod1"), addr(e.PodNS("node1", "pod1"))}
	pod2 = endpoint{e.PodNS("node2", "pod1"), addr(e.PodNS("node2", "pod1"))}
	return e, node1, node2, pod1, pod2
}

// endpoint is a namespace and its IPv4 address.
type endpoint struct {
	ns   string
	addr netip.Addr
}

func (e *env) globalAddr(netns string) (netip.Addr, error) {
	out, err := e.Exec(netns, "ip", "-4", "-j", "addr", "show", "scope", "global")
	if err != nil {
		return netip.Addr{}, err
	}
	var links []struct {
		AddrInfo []struct {
			Local netip.Addr `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return netip.Addr{}, err
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			return a.Local, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: no global IPv4 address", netns)
}

// BenchmarkCrossNodeThroughput measures TCP throughput with iperf3 (one
// stream, 2 s after a 1 s warm-up) node1→node2 and pod→pod across the same
// two nodes, alternating, three times each per iteration, and reports the
// median of each and their ratio (target ≥ 0.95).
func BenchmarkCrossNodeThroughput(b *testing.B) {
	e, node1, node2, pod1, pod2 := benchLab(b)
	for _, srv := range []endpoint{node2, pod2} {
		if err := e.daemonIn(srv.ns, "iperf3", "-s", "-B", srv.addr.String()); err != nil {
			b.Fatal(err)
		}
	}
	var nodeBps, podBps []float64
	b.ResetTimer()
	for range b.N {
		for range 3 {
			n, err := e.iperf(node1.ns, node2.addr)
			if err != nil {
				b.Fatal(err)
			}
			p, err := e.iperf(pod1.ns, pod2.addr)
			if err != nil {
				b.Fatal(err)
			}
			nodeBps, podBps = append(nodeBps, n), append(podBps, p)
		}
	}
	b.ReportMetric(0, "ns/op")
	n, p := median(nodeBps), median(podBps)
	b.ReportMetric(n/1e9, "node-Gbit/s")
	b.ReportMetric(p/1e9, "pod-Gbit/s")
	b.ReportMetric(p/n, "pod/node")
}

// daemonIn starts a process in a namespace that lives until the lab goes
// down (Down kills every process in its namespaces).
func (e *env) daemonIn(netns string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, args...)...)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

// iperf runs an iperf3 client and returns the bits per second received. It
// tries again while the server is not yet listening.
func (e *env) iperf(netns string, server netip.Addr) (float64, error) {
	var err error
	for attempt := 0; attempt < 30; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		var out string
		if out, err = e.Exec(netns, "iperf3", "-c", server.String(), "-t", "2", "-O", "1", "-J"); err != nil {
			continue
		}
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err = json.Unmarshal([]byte(out), &r); err != nil {
			err = fmt.Errorf("iperf3 to %s from %s: %w: %s", server, netns, err, tail(out, 20))
			continue
		}
		if r.End.SumReceived.BitsPerSecond > 0 {
			return r.End.SumReceived.BitsPerSecond, nil
		}
		err = fmt.Errorf("iperf3 to %s from %s: nothing received: %s", server, netns, tail(out, 20))
	}
	return 0, err
}

// BenchmarkCrossNodeLatency measures TCP request/response round trips (64
// bytes each way, TCP_NODELAY, 2000 per path and iteration) node1→node2 and
// pod→pod across the same nodes, and reports the median round trip of each
// and their ratio (pod/node; 1 is no added latency).
func BenchmarkCrossNodeLatency(b *testing.B) {
	_, node1, node2, pod1, pod2 := benchLab(b)
	const rounds = 2000
	var nodeRTT, podRTT []time.Duration
	b.ResetTimer()
	for range b.N {
		n, err := pingPong(node1, node2, rounds)
		if err != nil {
			b.Fatal(err)
		}
		p, err := pingPong(pod1, pod2, rounds)
		if err != nil {
			b.Fatal(err)
		}
		nodeRTT = append(nodeRTT, n...)
		podRTT = append(podRTT, p...)
	}
	b.ReportMetric(0, "ns/op")
	nm, pm := median(nodeRTT), median(podRTT)
	b.ReportMetric(float64(nm.Nanoseconds())/1e3, "node-µs/rtt")
	b.ReportMetric(float64(pm.Nanoseconds())/1e3, "pod-µs/rtt")
	b.ReportMetric(float64(pm)/float64(nm), "pod/node")
}

// pingPong echoes 64-byte messages over one TCP connection from one
// namespace to a server in another and returns every round trip.
func pingPong(from, to endpoint, rounds int) ([]time.Duration, error) {
	lis, err := netns.Do(to.ns, func() (net.Listener, error) {
		return net.Listen("tcp", netip.AddrPortFrom(to.addr, 0).String())
	})
	if err != nil {
		return nil, err
	}
	defer lis.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
	defer wg.Wait()
	c, err := netns.Do(from.ns, func() (net.Conn, error) { return net.DialTimeout("tcp", lis.Addr().String(), 3*time.Second) })
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetNoDelay(true)
	msg, buf := make([]byte, 64), make([]byte, 64)
	rtts := make([]time.Duration, 0, rounds)
	for i := range rounds + 100 { // the first 100 warm up
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		if i >= 100 {
			rtts = append(rtts, time.Since(start))
		}
	}
	return rtts, nil
}

func median[T time.Duration | float64](d []T) T {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkUpToReachable measures, per topology, the time from the start of
// Up to every pod reaching every pod on the other nodes (ICMP, every address
// family): Up, two pods a node attached through the CNI plugin, BGP sessions,
// routes in every kernel. Each iteration is one up and down; the reported
// figure is the median.
func BenchmarkUpToReachable(b *testing.B) {
	for _, topo := range topologies {
		b.Run("topo="+topo.label(), func(b *testing.B) {
			var took []time.Duration
			for range b.N {
				took = append(took, upToReachable(b, topo))
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(took).Seconds(), "s-to-reachable")
		})
	}
}

func upToReachable(b *testing.B, topo testTopology) time.Duration {
	start := time.Now()
	e := up(b, topo, func(s string) string { return s })
	e.addPods(b, 2)
	pods, err := e.Pods()
	if err != nil {
		b.Fatal(err)
	}
	type pair struct {
		from string
		to   netip.Addr
	}
	var pending []pair
	for _, from := range pods {
		for _, to := range pods {
			if from.Node != to.Node {
				for _, a := range to.Addrs {
					pending = append(pending, pair{from.NS, a})
				}
			}
		}
	}
	for deadline := time.Now().Add(time.Minute); len(pending) > 0; {
		if time.Now().After(deadline) {
			b.Fatalf("%s: still unreachable after a minute: %v", topo.name, pending)
		}
		ok := make([]bool, len(pending))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i, p := range pending {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				_, err := e.Exec(p.from, "ping", "-c", "1", "-W", "0.2", p.to.String())
				ok[i] = err == nil
			})
		}
		wg.Wait()
		var still []pair
		for i, p := range pending {
			if !ok[i] {
				still = append(still, p)
			}
		}
		pending = still
	}
	took := time.Since(start)
	if err := e.Down(); err != nil {
		b.Fatal(err)
	}
	return took
}
