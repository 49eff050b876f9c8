package bgpbench_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// The injector is a GoBGP speaker that holds N preloaded /32s and announces
// them to each peer it is given. It runs as a child of the test binary under
// `ip netns exec`: GoBGP's goroutines are not bound to the caller's
// namespace, a process is. It talks over stdin and stdout, one line each:
//
//	→ loaded <routes> <milliseconds>            once the routes are in its RIB
//	← peer <address> <asn>                      add a peer (the injector dials and listens)
//	→ openconfirm <address> <unix-nanoseconds>  the session's OPEN was accepted
//	→ established <address> <unix-nanoseconds>  Established: the routes go out now
//
// GoBGP raises Established right after it has queued the whole table for the
// peer: that is when the first UPDATE goes out. OpenConfirm to Established is
// mostly the injector preparing that table.
const envInjector = "FLATNET_BGPBENCH_INJECTOR"

// injectorSpec is the injector's configuration, passed as JSON in envInjector.
type injectorSpec struct {
	ASN      uint32
	RouterID netip.Addr
	First    netip.Addr // routes are First/32, First+1/32, ...
	Routes   int
}

// hostRoutes returns the first n /32s from first.
func hostRoutes(first netip.Addr, n int) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for a := first; len(out) < n; a = a.Next() {
		out = append(out, netip.PrefixFrom(a, 32))
	}
	return out
}

// runInjector is the injector's main.
func runInjector(specJSON string, in io.Reader, out io.Writer) error {
	var spec injectorSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := server.NewBgpServer(server.LoggerOption(log, nil))
	go srv.Serve()
	ipv4 := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: spec.ASN, RouterId: spec.RouterID.String(), ListenPort: 179,
		Families: []uint32{uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST])},
	}}); err != nil {
		return fmt.Errorf("start bgp: %w", err)
	}
	err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			switch ev.Peer.State.SessionState {
			case bgppkt.BGP_FSM_OPENCONFIRM:
				say("openconfirm %s %d", ev.Peer.State.NeighborAddress, at.UnixNano())
			case bgppkt.BGP_FSM_ESTABLISHED:
				say("established %s %d", ev.Peer.State.NeighborAddress, at.UnixNano())
			}
		},
	}, server.WatchPeer())
	if err != nil {
		return fmt.Errorf("watch peers: %w", err)
	}

	// Preload: origin IGP, next hop 0.0.0.0 (GoBGP sends its own address to
	// eBGP peers), in batches.
	start := time.Now()
	nh, err := bgppkt.NewPathAttributeNextHop(netip.IPv4Unspecified())
	if err != nil {
		return err
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP), nh}
	routes := hostRoutes(spec.First, spec.Routes)
	for len(routes) > 0 {
		batch := routes[:min(len(routes), 10_000)]
		routes = routes[len(batch):]
		paths := make([]*apiutil.Path, 0, len(batch))
		for _, p := range batch {
			nlri, err := bgppkt.NewIPAddrPrefix(p)
			if err != nil {
				return err
			}
			paths = append(paths, &apiutil.Path{Family: bgppkt.RF_IPv4_UC, Nlri: nlri, Attrs: attrs, Age: start.Unix()})
		}
		resps, err := srv.AddPath(apiutil.AddPathRequest{Paths: paths})
		if err != nil {
			return fmt.Errorf("add paths: %w", err)
		}
		for _, r := range resps {
			if r.Error != nil {
				return fmt.Errorf("add path: %w", r.Error)
			}
		}
	}
	say("loaded %d %d", spec.Routes, time.Since(start).Milliseconds())

	lines := bufio.NewScanner(in)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) != 3 || f[0] != "peer" {
			return fmt.Errorf("unknown command %q", lines.Text())
		}
		asn, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return fmt.Errorf("peer %s: asn: %w", f[1], err)
		}
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:     &api.PeerConf{NeighborAddress: f[1], PeerAsn: uint32(asn)},
			Timers:   &api.Timers{Config: &api.TimersConfig{ConnectRetry: 2, HoldTime: 90, KeepaliveInterval: 30}},
			AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: ipv4, Enabled: true}}},
		}}); err != nil {
			return fmt.Errorf("add peer %s: %w", f[1], err)
		}
	}
	return lines.Err() // stdin closed: the benchmark is done with us
}

// injector is the parent's handle on a running injector.
type injector struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	loaded time.Duration // how long preloading took
}

// startInjector runs an injector with spec in namespace nsName and waits
// until its routes are loaded. It is killed when b ends.
func startInjector(b *testing.B, nsName string, spec injectorSpec) *injector {
	b.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", nsName, os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envInjector+"="+string(raw))
	inj := &injector{cmd: cmd, lines: make(chan string, 16), stderr: &syncBuffer{}}
	cmd.Stderr = inj.stderr
	if inj.stdin, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		defer close(inj.lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			inj.lines <- s.Text()
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	f := inj.expect(b, "loaded", time.Duration(spec.Routes)*100*time.Microsecond+30*time.Second)
	msec, _ := strconv.Atoi(f[2])
	inj.loaded = time.Duration(msec) * time.Millisecond
	return inj
}

// expect waits for the injector's next line starting with word and returns
// its fields; other lines are skipped.
func (inj *injector) expect(b *testing.B, word string, timeout time.Duration) []string {
	b.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-inj.lines:
			if !ok {
				b.Fatalf("injector exited waiting for %q:\n%s", word, inj.stderr.String())
			}
			if f := strings.Fields(line); len(f) > 0 && f[0] == word {
				return f
			}
		case <-deadline:
			b.Fatalf("injector: no %q after %s:\n%s", word, timeout, inj.stderr.String())
		}
	}
}

// session is the start of a session from the injector's side.
type session struct {
	openConfirm, established time.Time
}

// peer has the injector peer with addr and returns when the session came up.
func (inj *injector) peer(b *testing.B, addr netip.Addr, asn uint32) session {
	b.Helper()
	if _, err := fmt.Fprintf(inj.stdin, "peer %s %d\n", addr, asn); err != nil {
		b.Fatalf("injector: %v", err)
	}
	var s session
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-inj.lines:
			if !ok {
				b.Fatalf("injector exited waiting for the session to %s:\n%s", addr, inj.stderr.String())
			}
			f := strings.Fields(line)
			if len(f) != 3 || f[1] != addr.String() {
				continue // another peer's
			}
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			switch f[0] {
			case "openconfirm":
				s.openConfirm = time.Unix(0, ns) // the last one, after a connection collision
			case "established":
				s.established = time.Unix(0, ns)
				return s
			}
		case <-deadline:
			b.Fatalf("injector: no session to %s after 30s:\n%s", addr, inj.stderr.String())
		}
	}
}
