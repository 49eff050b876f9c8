package bgpbench_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Route protocols the receivers install with (rtm_protocol).
const (
	protoFlatnet = 75 // wellknown.RouteProtocol
	protoBGP     = unix.RTPROT_BGP
)

// routeSocket is a raw rtnetlink socket opened inside a namespace. It reads
// just enough of each message to count or name routes: listing 100k routes
// through a general-purpose netlink library costs more than the kernel's
// dump itself, and the measurements poll while the receivers work.
type routeSocket struct {
	fd  int
	seq uint32
	buf []byte
}

// openRouteSocket opens a socket in namespace nsName, subscribed to groups
// (0: none, for dumps).
func openRouteSocket(nsName string, groups uint32) (*routeSocket, error) {
	var fd int
	err := ns.WithNetNSPath("/run/netns/"+nsName, func(ns.NetNS) error {
		var err error
		if fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE); err != nil {
			return err
		}
		if err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
			unix.Close(fd)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("route socket in %s: %w", nsName, err)
	}
	// The kernel filters a dump by table, protocol and type only with
	// strict checking on; a large buffer keeps event bursts from being dropped.
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("route socket in %s: strict checking: %w", nsName, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	return &routeSocket{fd: fd, buf: make([]byte, 1<<20)}, nil
}

func (s *routeSocket) close() { unix.Close(s.fd) }

// count returns how many IPv4 unicast routes of the main table carry proto.
func (s *routeSocket) count(proto uint8) (int, error) {
	s.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.RTM_GETROUTE)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], s.seq)
	rtm := req[unix.NLMSG_HDRLEN:]
	rtm[0] = unix.AF_INET
	rtm[4] = unix.RT_TABLE_MAIN
	rtm[5] = proto
	rtm[7] = unix.RTN_UNICAST
	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("route dump: %w", err)
	}
	n := 0
	for {
		got, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			return 0, fmt.Errorf("route dump: %w", err)
		}
		for b := s.buf[:got]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(ne.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return 0, errors.New("route dump: malformed message")
			}
			typ, seq, m := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[unix.NLMSG_HDRLEN:l]
			b = b[min(len(b), nlmAlign(l)):]
			if seq != s.seq {
				continue
			}
			switch typ {
			case unix.NLMSG_DONE:
				return n, nil
			case unix.NLMSG_ERROR:
				if errno := int32(ne.Uint32(m)); errno != 0 {
					return 0, fmt.Errorf("route dump: %w", unix.Errno(-errno))
				}
			case unix.RTM_NEWROUTE:
				// Filtered by the kernel already; checked again all the same.
				if len(m) >= unix.SizeofRtMsg && m[4] == unix.RT_TABLE_MAIN && m[5] == proto && m[7] == unix.RTN_UNICAST {
					n++
				}
			}
		}
	}
}

func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// routeWatch records when IPv4 routes of one protocol first appear in a
// namespace, from the kernel's route events: exact times, and far cheaper
// than listing the table again and again while it grows to 100k routes.
type routeWatch struct {
	s     *routeSocket
	proto uint8
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	seen    map[netip.Prefix]time.Time
	changed chan struct{} // closed and replaced on every new route
	lost    bool          // the socket overflowed: events were dropped
	err     error
}

func watchRoutes(nsName string, proto uint8) (*routeWatch, error) {
	s, err := openRouteSocket(nsName, unix.RTMGRP_IPV4_ROUTE)
	if err != nil {
		return nil, err
	}
	// A timeout on reads lets stop end the reader.
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		s.close()
		return nil, err
	}
	w := &routeWatch{s: s, proto: proto, stop: make(chan struct{}), done: make(chan struct{}),
		seen: map[netip.Prefix]time.Time{}, changed: make(chan struct{})}
	go w.read()
	return w, nil
}

func (w *routeWatch) read() {
	defer close(w.done)
	ne := binary.NativeEndian
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		got, _, err := unix.Recvfrom(w.s.fd, w.s.buf, 0)
		at := time.Now()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENOBUFS) {
			w.mu.Lock()
			w.lost = true
			w.mu.Unlock()
			continue
		}
		if err != nil {
			w.mu.Lock()
			w.err = fmt.Errorf("route events: %w", err)
			w.mu.Unlock()
			return
		}
		for b := w.s.buf[:got]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(ne.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			typ, m := ne.Uint16(b[4:]), b[unix.NLMSG_HDRLEN:l]
			b = b[min(len(b), nlmAlign(l)):]
			if typ != unix.RTM_NEWROUTE || len(m) < unix.SizeofRtMsg || m[0] != unix.AF_INET || m[5] != w.proto {
				continue
			}
			if p, ok := routeDst(m); ok {
				w.mu.Lock()
				if _, dup := w.seen[p]; !dup {
					w.seen[p] = at
					close(w.changed)
					w.changed = make(chan struct{})
				}
				w.mu.Unlock()
			}
		}
	}
}

// routeDst returns the destination of an IPv4 rtmsg with its attributes.
func routeDst(m []byte) (netip.Prefix, bool) {
	ne := binary.NativeEndian
	bits := int(m[1])
	for a := m[unix.SizeofRtMsg:]; len(a) >= unix.SizeofRtAttr; {
		l, typ := int(ne.Uint16(a)), ne.Uint16(a[2:])
		if l < unix.SizeofRtAttr || l > len(a) {
			return netip.Prefix{}, false
		}
		if typ == unix.RTA_DST && l == unix.SizeofRtAttr+4 {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte(a[unix.SizeofRtAttr:l])), bits), true
		}
		a = a[min(len(a), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return netip.Prefix{}, false
}

// wait returns when p first appeared, waiting for it up to timeout.
func (w *routeWatch) wait(p netip.Prefix, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		at, ok := w.seen[p]
		changed, err := w.changed, w.err
		w.mu.Unlock()
		switch {
		case ok:
			return at, nil
		case err != nil:
			return time.Time{}, err
		}
		select {
		case <-changed:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("no route to %s after %s", p, timeout)
		}
	}
}

// seenCount returns how many routes appeared so far, and whether events
// were lost (then the count is short).
func (w *routeWatch) seenCount() (n int, lost bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen), w.lost, w.err
}

// seenTimes returns when each route appeared, in order.
func (w *routeWatch) seenTimes() []time.Time {
	w.mu.Lock()
	out := make([]time.Time, 0, len(w.seen))
	for _, at := range w.seen {
		out = append(out, at)
	}
	w.mu.Unlock()
	slices.SortFunc(out, time.Time.Compare)
	return out
}

func (w *routeWatch) close() {
	close(w.stop)
	<-w.done
	w.s.close()
}
