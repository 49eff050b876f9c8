package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options configure New. A zero field takes the default in parentheses.
type Options struct {
	// NetNS is the network namespace whose main table the reconciler
	// programs; nil means the namespace of the calling thread.
	NetNS ns.NetNS
	// Log receives the reconciler's logs; nil discards them.
	Log *slog.Logger
	// Debounce is how long changes are coalesced before a write (5ms).
	Debounce time.Duration
	// Resync is how often the whole table is read and repaired (1m).
	Resync time.Duration
	// Retry is the first retry after a failed write, doubling up to Resync (1s).
	Retry time.Duration
	// BatchSize caps the route messages sent in one sendmsg (1024).
	BatchSize int
	// OnPass, if set, is told of every reconcile pass, on Run's goroutine:
	// it must be quick.
	OnPass func(Pass)
}

// New opens netlink sockets in opts.NetNS and returns a reconciler over them.
// It reads or writes nothing until Run.
func New(opts Options) (*Reconciler, error) {
	k, err := openKernel(opts.NetNS, opts.BatchSize)
	if err != nil {
		return nil, err
	}
	return newReconciler(k, opts.Log, settings{debounce: opts.Debounce, resync: opts.Resync, retry: opts.Retry, onPass: opts.OnPass}), nil
}

const (
	dumpAttempts  = 5                // tries of a dump the kernel keeps interrupting
	socketTimeout = 30 * time.Second // no netlink reply for this long is an error
)

// netlinkKernel is the one wrapper every netlink call of the package goes
// through: a handle for dumps, a socket for batched writes (batch_linux.go),
// and the route event subscription (events_linux.go), all bound to one
// namespace.
type netlinkKernel struct {
	netns ns.NetNS
	h     *netlink.Handle
	w     *batchSocket

	sendmsgs atomic.Uint64 // sendmsg calls carrying route messages
	acks     atomic.Uint64 // acknowledged round trips (one per batch)
	messages atomic.Uint64 // route messages sent
	events   atomic.Uint64 // route events delivered (others' changes only)
}

var _ kernel = (*netlinkKernel)(nil)

func openKernel(netns ns.NetNS, batchSize int) (*netlinkKernel, error) {
	k := &netlinkKernel{netns: netns}
	err := k.inNS(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("open netlink handle: %w", err)
		}
		k.h = h
		if err := h.SetSocketTimeout(socketTimeout); err != nil {
			return fmt.Errorf("set netlink timeout: %w", err)
		}
		k.w, err = openBatchSocket(batchSize)
		return err
	})
	if err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

// inNS runs f in the kernel's namespace; sockets f opens stay bound to it.
func (k *netlinkKernel) inNS(f func() error) error {
	if k.netns == nil {
		return f()
	}
	return k.netns.Do(func(ns.NetNS) error { return f() })
}

// dump runs f, a netlink dump, again from the start while the kernel reports
// it was interrupted by a concurrent change; reset clears f's partial result.
func (k *netlinkKernel) dump(ctx context.Context, reset func(), f func() error) error {
	var err error
	for range dumpAttempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		reset()
		if err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return fmt.Errorf("dump interrupted %d times: %w", dumpAttempts, err)
}

func (k *netlinkKernel) list(ctx context.Context) ([]kernelRoute, error) {
	var routes []kernelRoute
	err := k.dump(ctx, func() { routes = routes[:0] }, func() error {
		// With no filter the handle dumps the main table of both families.
		return k.h.RouteListFilteredIter(netlink.FAMILY_ALL, &netlink.Route{}, 0, func(nr netlink.Route) bool {
			if r, ok := fromNetlink(nr); ok {
				routes = append(routes, r)
			}
			return true
		})
	})
	return routes, err
}

func (k *netlinkKernel) roundTrips() uint64 { return k.acks.Load() }

func (k *netlinkKernel) close() error {
	if k.h != nil {
		k.h.Close()
	}
	if k.w != nil {
		return k.w.close()
	}
	return nil
}

// fromNetlink converts a route of the main table; it reports false for
// routes the reconciler has no business with (other families, no prefix).
func fromNetlink(nr netlink.Route) (kernelRoute, bool) {
	var prefix netip.Prefix
	switch {
	case nr.Dst != nil:
		addr, ok := netip.AddrFromSlice(nr.Dst.IP)
		ones, bits := nr.Dst.Mask.Size()
		if !ok || bits == 0 {
			return kernelRoute{}, false
		}
		if nr.Family == unix.AF_INET {
			addr = addr.Unmap()
		}
		prefix = netip.PrefixFrom(addr, ones)
	case nr.Family == unix.AF_INET:
		prefix = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	case nr.Family == unix.AF_INET6:
		prefix = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	default:
		return kernelRoute{}, false
	}
	r := kernelRoute{
		key:       routeKey{prefix: prefix, metric: uint32(nr.Priority)},
		protocol:  int(nr.Protocol),
		unicast:   nr.Type == unix.RTN_UNICAST,
		blackhole: nr.Type == unix.RTN_BLACKHOLE,
	}
	if gw, ok := addrOf(nr.Gw); ok {
		r.nextHops = []netip.Addr{gw}
		r.oif = nr.LinkIndex
	}
	for _, nh := range nr.MultiPath {
		gw, ok := addrOf(nh.Gw)
		if !ok {
			// A hop through a device alone: not a route flatnet makes.
			r.nextHops = nil
			break
		}
		r.nextHops = append(r.nextHops, gw)
	}
	if len(nr.MultiPath) == 0 && len(r.nextHops) == 0 {
		r.oif = nr.LinkIndex
	}
	return r, true
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// gateway looks up the kernel's route to addr (RTM_GETROUTE): a next hop
// behind a router is reached through that router's address. Our own routes
// are not followed (a next hop inside a learned prefix stays as it is, and
// its write fails visibly), nor is a lookup that fails.
func (k *netlinkKernel) gateway(addr netip.Addr) netip.Addr {
	routes, err := k.h.RouteGet(addr.AsSlice())
	if err != nil || len(routes) == 0 {
		return addr
	}
	rt := routes[0]
	if rt.Protocol == routeProtocol {
		return addr
	}
	if gw, ok := addrOf(rt.Gw); ok && gw != addr {
		return gw
	}
	return addr
}
