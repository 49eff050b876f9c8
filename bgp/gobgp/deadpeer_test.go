package gobgp

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/bgp"
)

// TestDeadPeerWithdrawnAtHoldTime: a peer that goes silent without closing
// its session (a node that lost power or its network) has its routes
// withdrawn when the hold timer expires, graceful restart or not: only a
// session that ends without a NOTIFICATION is a restart. (GoBGP v4.8.0 kept
// them, stale, for the restart time on top; third_party/gobgp fixes it.)
func TestDeadPeerWithdrawnAtHoldTime(t *testing.T) {
	const hold = 3 * time.Second // the least BGP allows
	l := newLab(t)
	a, b := l.node("a", nil), l.node("b", nil)
	// a reaches b through a proxy that can go silent; b only listens.
	px := newSilencer(t, l.addr(200), b.addr, b.port, a.addr)
	timers := func(p *bgp.Peer) { p.HoldTime, p.KeepaliveInterval = hold, time.Second }
	a.setPeers(bgp.Peer{Name: "b", Address: px.addr.Addr(), Port: px.addr.Port(), ASN: meshASN, Mesh: true, HoldTime: hold, KeepaliveInterval: time.Second})
	b.setPeers(a.peer(func(p *bgp.Peer) { timers(p); p.Passive = true }))
	b.advertise("10.244.1.0/26 via " + b.addr.String())
	a.waitRoute("10.244.1.0/26", b.addr.String())
	a.quiesce()

	start := time.Now()
	px.silence()
	a.waitRoute("10.244.1.0/26") // within waitFor's deadline, far below the restart time
	took := time.Since(start)
	t.Logf("b's route withdrawn %v after b went silent (hold time %v, restart time %v)", took.Round(time.Millisecond), hold, a.cfg.GracefulRestart.RestartTime)
	if took > a.cfg.GracefulRestart.RestartTime {
		t.Errorf("b's route withdrawn after %v: kept as if b were restarting", took)
	}
	if n := a.logs.count("hold timer expired"); n == 0 {
		t.Errorf("a did not log its hold timer expiring")
	}
}

// silencer is a TCP proxy to a BGP speaker that can stop forwarding in both
// directions while keeping every connection open: the speaker behind it
// looks dead, not gone.
type silencer struct {
	addr   netip.AddrPort
	mu     sync.Mutex
	silent bool
	conns  []net.Conn
}

// newSilencer listens on listen and forwards each connection to to:port,
// dialling it from from (the address the speaker there knows its peer by).
func newSilencer(t *testing.T, listen, to netip.Addr, port int, from netip.Addr) *silencer {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(listen, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &silencer{addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
			out, err := d.Dial("tcp", netip.AddrPortFrom(to, uint16(port)).String())
			if err != nil {
				in.Close()
				continue
			}
			s.mu.Lock()
			s.conns = append(s.conns, in, out)
			s.mu.Unlock()
			go s.pipe(out, in)
			go s.pipe(in, out)
		}
	}()
	return s
}

// pipe copies src to dst until either closes, dropping what it reads while
// silent.
func (s *silencer) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		s.mu.Lock()
		silent := s.silent
		s.mu.Unlock()
		if n > 0 && !silent {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) || !silent {
				dst.Close()
			}
			return
		}
	}
}

// silence stops all forwarding for good; connections stay open.
func (s *silencer) silence() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.silent = true
}
