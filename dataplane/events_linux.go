package dataplane

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Route events. The subscription is our own socket rather than
// netlink.RouteSubscribeWithOptions because it needs two things that API
// hides: the socket, to attach a filter, and each message's nlmsg_pid. The
// kernel stamps a notification with the port of the socket whose request
// caused it, so a filter can drop the echoes of our own writes in the kernel.
// The reconciler learns those from the acks, in order; replaying them late
// would undo newer writes (a withdrawn and re-announced prefix) and, in a
// burst of thousands, would overflow the socket.

const eventBuffer = 8 << 20 // receive buffer of the route event socket

func (k *netlinkKernel) subscribe(ctx context.Context, fn func(routeEvent)) (<-chan error, error) {
	var s *nl.NetlinkSocket
	err := k.inNS(func() (err error) {
		s, err = nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Forcing the buffer size needs CAP_NET_ADMIN, as writing routes does.
	if err := s.SetReceiveBufferSize(eventBuffer, true); err != nil {
		s.Close()
		return nil, fmt.Errorf("route event buffer: %w", err)
	}
	if err := dropEchoes(s.GetFd(), k.w.port); err != nil {
		s.Close()
		return nil, fmt.Errorf("route event filter: %w", err)
	}
	broken := make(chan error, 1)
	stop := context.AfterFunc(ctx, s.Close)
	go func() {
		defer stop()
		for {
			msgs, from, err := s.Receive()
			if err != nil {
				s.Close()
				if ctx.Err() == nil {
					broken <- fmt.Errorf("receive route events: %w", err)
				}
				return
			}
			if from.Pid != nl.PidKernel {
				continue
			}
			for _, m := range msgs {
				if m.Header.Pid == k.w.port || (m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE) {
					continue
				}
				if r, ok := parseRoute(m.Data); ok {
					k.events.Add(1)
					fn(routeEvent{
						deleted: m.Header.Type == unix.RTM_DELROUTE,
						replace: m.Header.Flags&unix.NLM_F_REPLACE != 0,
						route:   r,
					})
				}
			}
		}
	}()
	return broken, nil
}

// dropEchoes attaches a socket filter that drops messages whose nlmsg_pid is
// port. Classic BPF loads words in network byte order; nlmsg_pid is native.
func dropEchoes(fd int, port uint32) error {
	if nl.NativeEndian() == binary.ByteOrder(binary.LittleEndian) {
		port = bits.ReverseBytes32(port)
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12}, // nlmsg_pid
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: port},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // keep
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: unsafe.SliceData(prog)})
}

// parseRoute decodes an RTM_NEWROUTE/RTM_DELROUTE payload of the main table
// the way fromNetlink converts a dumped route; it reports false for anything
// else (other tables and families, cached clones).
func parseRoute(b []byte) (kernelRoute, bool) {
	if len(b) < unix.SizeofRtMsg {
		return kernelRoute{}, false
	}
	msg := nl.DeserializeRtMsg(b)
	attrs, err := nl.ParseRouteAttr(b[msg.Len():])
	if err != nil || msg.Flags&unix.RTM_F_CLONED != 0 || (msg.Family != unix.AF_INET && msg.Family != unix.AF_INET6) {
		return kernelRoute{}, false
	}
	native := nl.NativeEndian()
	r := kernelRoute{protocol: int(msg.Protocol), unicast: msg.Type == unix.RTN_UNICAST, blackhole: msg.Type == unix.RTN_BLACKHOLE}
	table := uint32(msg.Table)
	dst := netip.IPv4Unspecified()
	if msg.Family == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	}
	devHop := false
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_TABLE:
			table = native.Uint32(a.Value)
		case unix.RTA_DST:
			if d, ok := netip.AddrFromSlice(a.Value); ok {
				dst = d
			}
		case unix.RTA_PRIORITY:
			r.key.metric = native.Uint32(a.Value)
		case unix.RTA_OIF:
			r.oif = int(native.Uint32(a.Value))
		case unix.RTA_GATEWAY:
			if gw, ok := netip.AddrFromSlice(a.Value); ok {
				r.nextHops = append(r.nextHops, gw.Unmap())
			}
		case unix.RTA_MULTIPATH:
			var hops []netip.Addr
			hops, devHop = parseMultipath(a.Value)
			r.nextHops = append(r.nextHops, hops...)
		}
	}
	if table != unix.RT_TABLE_MAIN {
		return kernelRoute{}, false
	}
	if devHop {
		r.nextHops = nil // a hop through a device alone: not a route flatnet makes
	}
	if len(r.nextHops) > 1 {
		r.oif = 0
	}
	r.key.prefix = netip.PrefixFrom(dst, int(msg.Dst_len))
	return r, r.key.prefix.IsValid()
}

// parseMultipath returns the gateways of an RTA_MULTIPATH attribute and
// whether some hop has none.
func parseMultipath(b []byte) (gws []netip.Addr, devHop bool) {
	for len(b) >= unix.SizeofRtNexthop {
		hop := nl.DeserializeRtNexthop(b)
		n := int(hop.RtNexthop.Len)
		if n < unix.SizeofRtNexthop || n > len(b) {
			break
		}
		attrs, _ := nl.ParseRouteAttr(b[unix.SizeofRtNexthop:n])
		found := false
		for _, a := range attrs {
			if a.Attr.Type != unix.RTA_GATEWAY {
				continue
			}
			if gw, ok := netip.AddrFromSlice(a.Value); ok {
				gws, found = append(gws, gw.Unmap()), true
			}
		}
		devHop = devHop || !found
		b = b[min(len(b), (n+syscall.RTA_ALIGNTO-1)&^(syscall.RTA_ALIGNTO-1)):]
	}
	return gws, devHop
}
