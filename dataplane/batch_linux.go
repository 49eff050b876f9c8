package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Batching. rtnetlink handles every message of a sendmsg in turn, inside that
// sendmsg, and answers a message only if it fails or asks for an ack. So a
// batch is many route messages in one sendmsg with NLM_F_ACK on the last one
// only: the replies that follow are the errors of single routes, in order,
// and then the ack of the last message, which closes the round trip.
const (
	defaultBatch  = 1024     // route messages per sendmsg
	maxBatchBytes = 64 << 10 // well under the default socket send buffer
	replyBuffer   = 4 << 20  // room for a batch's error replies
)

// errRepliesLost is reported for a route whose outcome the kernel's replies
// no longer tell: the socket overflowed and dropped some.
var errRepliesLost = errors.New("netlink replies lost (receive buffer overflow); outcome unknown")

// batchSocket is the netlink socket route writes go through.
type batchSocket struct {
	port  uint32 // the socket's netlink port: the nlmsg_pid of our echoes
	f     *os.File
	raw   syscall.RawConn
	batch int
	seq   uint32
	out   []byte
	in    []byte
}

// openBatchSocket opens the socket in the calling thread's namespace.
func openBatchSocket(batch int) (*batchSocket, error) {
	if batch <= 0 {
		batch = defaultBatch
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if err != nil || !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket port: %w (sockaddr %T)", err, sa)
	}
	// Best effort: a larger buffer (it only fills when many routes fail),
	// error strings in replies, and replies without the echoed request.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, replyBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, replyBuffer)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	f := os.NewFile(uintptr(fd), "netlink-route")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	return &batchSocket{port: nsa.Pid, f: f, raw: raw, batch: batch, in: make([]byte, 64<<10)}, nil
}

func (s *batchSocket) close() error { return s.f.Close() }

// apply writes ops batch by batch and returns one error per op.
func (k *netlinkKernel) apply(ctx context.Context, ops []op) []error {
	errs := make([]error, len(ops))
	for start := 0; start < len(ops); {
		if err := ctx.Err(); err != nil {
			for i := start; i < len(ops); i++ {
				errs[i] = err
			}
			break
		}
		n, err := k.w.exchange(ctx, ops[start:], errs[start:])
		k.sendmsgs.Add(1)
		k.messages.Add(uint64(n))
		if err == nil {
			k.acks.Add(1)
		}
		for i := start; i < start+n; i++ {
			if err != nil && errs[i] == nil {
				errs[i] = err
			}
			if ops[i].kind == opDelete && errors.Is(errs[i], unix.ESRCH) {
				errs[i] = nil // already gone
			}
		}
		start += n
	}
	return errs
}

// exchange sends one batch taken from the front of ops, records each
// refused route's error in errs, and returns how many ops it sent. An error
// means the batch's outcome is unknown beyond what errs says.
func (s *batchSocket) exchange(ctx context.Context, ops []op, errs []error) (int, error) {
	s.out = s.out[:0]
	first := s.seq + 1
	last, n := 0, 0
	for n < len(ops) && n < s.batch && len(s.out) < maxBatchBytes {
		s.seq++
		last = len(s.out)
		s.out = appendRouteMsg(s.out, ops[n], s.seq)
		n++
	}
	flags := nl.NativeEndian().Uint16(s.out[last+6:]) // nlmsg_flags of the last message
	nl.NativeEndian().PutUint16(s.out[last+6:], flags|unix.NLM_F_ACK)

	deadline := time.Now().Add(socketTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.f.SetDeadline(deadline); err != nil {
		return 0, err
	}
	var sendErr error
	err := s.raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), s.out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return sendErr != unix.EAGAIN
	})
	if err = errors.Join(err, sendErr); err != nil {
		return 0, fmt.Errorf("send %d route messages: %w", n, err)
	}

	lost := false
	for {
		msgs, err := s.receive()
		if errors.Is(err, unix.ENOBUFS) {
			// Replies were dropped, perhaps the final ack: they were all
			// queued during sendmsg, so read what is left and stop.
			lost = true
			_ = s.f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			continue
		}
		if err != nil {
			if lost {
				err = errRepliesLost
			}
			return n, fmt.Errorf("read route replies: %w", err)
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - first)
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq-first >= uint32(n) {
				continue // a late reply to an earlier batch
			}
			if err := replyError(m); err != nil {
				errs[i] = err
			}
			if i == n-1 {
				if lost {
					return n, errRepliesLost
				}
				return n, nil
			}
		}
	}
}

func (s *batchSocket) receive() ([]syscall.NetlinkMessage, error) {
	var n int
	var recvErr error
	err := s.raw.Read(func(fd uintptr) bool {
		n, _, recvErr = unix.Recvfrom(int(fd), s.in, 0)
		return recvErr != unix.EAGAIN
	})
	if err = errors.Join(err, recvErr); err != nil {
		return nil, err
	}
	return syscall.ParseNetlinkMessage(s.in[:n])
}

// replyError decodes an NLMSG_ERROR reply: nil for an ack, else the errno
// with the kernel's extended-ack message when it sent one.
func replyError(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return errors.New("short netlink error reply")
	}
	errno := int32(nl.NativeEndian().Uint32(m.Data))
	if errno == 0 {
		return nil
	}
	err := error(syscall.Errno(-errno))
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+unix.SizeofNlMsghdr {
		return err
	}
	echoed := unix.SizeofNlMsghdr // NETLINK_CAP_ACK: the request's header only
	if m.Header.Flags&unix.NLM_F_CAPPED == 0 {
		echoed = int(nl.NativeEndian().Uint32(m.Data[4:])) // the whole request
	}
	if start := 4 + (echoed+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1); start < len(m.Data) {
		attrs, _ := nl.ParseRouteAttr(m.Data[start:])
		for _, a := range attrs {
			if a.Attr.Type == nl.NLMSGERR_ATTR_MSG {
				return fmt.Errorf("%w: %s", err, unix.ByteSliceToString(a.Value))
			}
		}
	}
	return err
}

// appendRouteMsg appends the RTM_NEWROUTE or RTM_DELROUTE message for o. A
// delete names the route as the kernel has it (type, protocol, metric, next
// hops or device), so it matches our route and never a pod route or another
// owner's route at the same prefix.
func appendRouteMsg(b []byte, o op, seq uint32) []byte {
	typ, flags := unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL
	switch o.kind {
	case opReplace:
		flags = unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	case opDelete:
		typ, flags = unix.RTM_DELROUTE, 0
	}
	req := nl.NewNetlinkRequest(typ, flags)
	req.Seq = seq

	msg := nl.NewRtMsg() // main table, scope universe, unicast
	msg.Family = unix.AF_INET
	if o.key.prefix.Addr().Is6() {
		msg.Family = unix.AF_INET6
	}
	msg.Dst_len = uint8(o.key.prefix.Bits())
	msg.Protocol = routeProtocol
	if o.blackhole {
		msg.Type = unix.RTN_BLACKHOLE
	}
	if o.kind == opDelete {
		msg.Scope = unix.RT_SCOPE_NOWHERE // any scope: the next hops pin the route
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, o.key.prefix.Addr().AsSlice()))
	if o.key.metric != 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_PRIORITY, nl.Uint32Attr(o.key.metric)))
	}
	switch {
	case o.blackhole:
		if o.kind == opDelete && o.oif != 0 {
			req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(o.oif))))
		}
	case len(o.nextHops) == 1:
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, o.nextHops[0].AsSlice()))
	default:
		var hops []byte
		for _, nh := range o.nextHops {
			hop := &nl.RtNexthop{Children: []nl.NetlinkRequestData{nl.NewRtAttr(unix.RTA_GATEWAY, nh.AsSlice())}}
			hops = append(hops, hop.Serialize()...)
		}
		req.AddData(nl.NewRtAttr(unix.RTA_MULTIPATH, hops))
	}
	return append(b, req.Serialize()...)
}
