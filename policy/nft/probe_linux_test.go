package nft

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/policy/policytest"
	"github.com/flatnet-io/flatnet/test/harness"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// A lab node: one namespace routing to pod namespaces over veths named as
// flatnet names them, /32 and /128 routes, permanent neighbours (no proxy
// ARP or ND needed), and a reconciler programming its table.

// nodeAddr4 and nodeAddr6 are the node's own addresses (on lo): the source
// of its probes.
var (
	nodeAddr4 = netip.MustParseAddr("10.255.0.1")
	nodeAddr6 = netip.MustParseAddr("fd10:ffff::1")
)

type labPod struct {
	pod    *corev1.Pod
	ns     *harness.NetNS
	handle string
	veth   string
	v4, v6 netip.Addr
}

type lab struct {
	node *harness.NetNS
	pods []*labPod
	w    policytest.World
}

func (l *lab) localPods() []policy.LocalPod {
	var out []policy.LocalPod
	for _, p := range l.pods {
		out = append(out, policy.LocalPod{Namespace: p.pod.Namespace, Name: p.pod.Name, Handle: p.handle, Addrs: []netip.Addr{p.v4, p.v6}})
	}
	return out
}

// ruleset computes what the node enforces under policies.
func (l *lab) ruleset(t testing.TB, policies []*networkingv1.NetworkPolicy) policy.Ruleset {
	t.Helper()
	var pods []*corev1.Pod
	for _, p := range l.pods {
		pods = append(pods, p.pod)
	}
	rs := policy.Compute(policy.Cluster{Pods: pods, Namespaces: l.w.Namespaces, Policies: policies}, l.localPods())
	if len(rs.Warnings) > 0 {
		t.Fatalf("warnings: %q", rs.Warnings)
	}
	return rs
}

func newLab(t testing.TB) *lab {
	t.Helper()
	l := &lab{node: newNodeNS(t), w: policytest.NewWorld()}
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{"ip", "addr", "add", nodeAddr4.String() + "/32", "dev", "lo"},
		{"ip", "addr", "add", nodeAddr6.String() + "/128", "dev", "lo"},
	} {
		l.node.MustExec(t, args...)
	}
	for i, p := range l.w.Pods {
		l.pods = append(l.pods, l.addPod(t, p, i))
	}
	return l
}

// addPod wires pod p as the i-th pod of the node (i picks its MACs) and
// starts its servers. Its addresses are its status's.
func (l *lab) addPod(t testing.TB, p *corev1.Pod, i int) *labPod {
	t.Helper()
	lp := &labPod{pod: p, handle: "cid-" + p.Namespace + "-" + p.Name + "/eth0"}
	lp.veth = policy.VethOf(lp.handle)
	for _, ip := range p.Status.PodIPs {
		a := netip.MustParseAddr(ip.IP)
		if a.Is4() {
			lp.v4 = a
		} else {
			lp.v6 = a
		}
	}
	lp.ns = harness.NewNetNS(t, "p"+p.Namespace+p.Name)
	serve(t, lp.ns)
	hostMAC, podMAC := fmt.Sprintf("02:00:00:00:%02x:01", i), fmt.Sprintf("02:00:00:00:%02x:02", i)
	l.node.MustExec(t, "ip", "link", "add", lp.veth, "address", hostMAC, "type", "veth", "peer", "name", "eth0", "address", podMAC, "netns", lp.ns.Name)
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv6.conf." + lp.veth + ".accept_dad=0"},
		{"ip", "link", "set", lp.veth, "up"},
		{"ip", "route", "add", lp.v4.String() + "/32", "dev", lp.veth},
		{"ip", "-6", "route", "add", lp.v6.String() + "/128", "dev", lp.veth},
		{"ip", "neigh", "replace", lp.v4.String(), "lladdr", podMAC, "dev", lp.veth, "nud", "permanent"},
		{"ip", "-6", "neigh", "replace", lp.v6.String(), "lladdr", podMAC, "dev", lp.veth, "nud", "permanent"},
	} {
		l.node.MustExec(t, args...)
	}
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "add", lp.v4.String() + "/32", "dev", "eth0"},
		{"ip", "-6", "addr", "add", lp.v6.String() + "/128", "dev", "eth0", "nodad"},
		{"ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
		{"ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
		{"ip", "neigh", "replace", "169.254.1.1", "lladdr", hostMAC, "dev", "eth0", "nud", "permanent"},
		{"ip", "-6", "neigh", "replace", "fe80::1", "lladdr", hostMAC, "dev", "eth0", "nud", "permanent"},
	} {
		lp.ns.MustExec(t, args...)
	}
	return lp
}

// flushConntrack forgets the node's connections, so that a probe of one
// scenario never rides on an entry of the one before.
func (l *lab) flushConntrack(t testing.TB) {
	t.Helper()
	err := l.node.Do(func(ns.NetNS) error {
		return netlink.ConntrackTableFlush(netlink.ConntrackTable)
	})
	if err != nil {
		t.Fatalf("flush conntrack: %v", err)
	}
}

// serve runs, in n, the servers of every probe port: TCP (accepts and
// closes), UDP (echoes) and SCTP (answers INIT with INIT-ACK), both
// families, until the test ends.
func serve(t testing.TB, n *harness.NetNS) {
	t.Helper()
	var closers []func() error
	var wg sync.WaitGroup
	err := n.Do(func(ns.NetNS) error {
		for _, port := range policytest.Ports {
			addr := ":" + strconv.Itoa(int(port))
			lis, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			closers = append(closers, lis.Close)
			wg.Go(func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			})
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			closers = append(closers, pc.Close)
			wg.Go(func() {
				buf := make([]byte, 64)
				for {
					k, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo(buf[:k], from)
				}
			})
		}
		for _, network := range []string{"ip4:132", "ip6:132"} {
			c, err := net.ListenIP(network, nil)
			if err != nil {
				return fmt.Errorf("raw SCTP socket: %w", err)
			}
			closers = append(closers, c.Close)
			wg.Go(func() { answerSCTP(c) })
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			_ = c()
		}
		wg.Wait()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// SCTP without an SCTP stack (this kernel has none: CONFIG_IP_SCTP is
// off): probes are raw packets. The prober sends an INIT to the port; the
// server's raw socket sees it and answers with an INIT-ACK carrying the
// INIT's tag, which conntrack tracks as the reply of the association; the
// probe passes when that INIT-ACK arrives. Netfilter sees real SCTP: the
// policy's `meta l4proto sctp th dport` matches and conntrack follows it.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpPacket builds a common header and one chunk, with the CRC32c.
func sctpPacket(src, dst uint16, vtag uint32, chunkType byte, body []byte) []byte {
	b := make([]byte, 12, 12+4+len(body))
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	binary.BigEndian.PutUint32(b[4:], vtag)
	b = append(b, chunkType, 0, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(4+len(body)))
	b = append(b, body...)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, castagnoli))
	return b
}

// initBody is an INIT's (or, with a cookie, an INIT-ACK's) fixed part.
func initBody(tag uint32, cookie []byte) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:], tag)
	binary.BigEndian.PutUint32(b[4:], 65536) // a_rwnd
	binary.BigEndian.PutUint16(b[8:], 1)     // outbound streams
	binary.BigEndian.PutUint16(b[10:], 1)    // inbound streams
	binary.BigEndian.PutUint32(b[12:], tag)  // initial TSN
	if cookie != nil {
		p := make([]byte, 4, 4+len(cookie))
		binary.BigEndian.PutUint16(p[0:], 7) // State Cookie
		binary.BigEndian.PutUint16(p[2:], uint16(4+len(cookie)))
		b = append(b, append(p, cookie...)...)
	}
	return b
}

const (
	sctpInit    = 1
	sctpInitAck = 2
)

// answerSCTP answers every INIT to a probe port until c is closed.
func answerSCTP(c *net.IPConn) {
	buf := make([]byte, 2048)
	for {
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		p := buf[:k]
		if len(p) < 32 || p[12] != sctpInit {
			continue
		}
		src, dst := binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:])
		if int32(dst) != policytest.Ports[0] && int32(dst) != policytest.Ports[1] {
			continue
		}
		theirTag := binary.BigEndian.Uint32(p[16:])
		_, _ = c.WriteTo(sctpPacket(dst, src, theirTag, sctpInitAck, initBody(theirTag^0x5a5a5a5a, []byte("cook"))), from)
	}
}

// probeSCTP sends an INIT from n to dst:port and waits for the INIT-ACK.
func probeSCTP(n *harness.NetNS, dst netip.Addr, port uint16, timeout time.Duration) (bool, error) {
	network := "ip4:132"
	if dst.Is6() {
		network = "ip6:132"
	}
	var c *net.IPConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenIP(network, nil)
		return err
	})
	if err != nil {
		return false, err
	}
	defer c.Close()
	var r [6]byte
	_, _ = rand.Read(r[:])
	tag := binary.BigEndian.Uint32(r[:4]) | 1
	sport := 20000 + binary.BigEndian.Uint16(r[4:])%20000
	to := &net.IPAddr{IP: dst.AsSlice()}
	if _, err := c.WriteTo(sctpPacket(sport, port, 0, sctpInit, initBody(tag, nil)), to); err != nil {
		return false, err
	}
	deadline := time.Now().Add(timeout)
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 2048)
	for {
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, nil
			}
			return false, err
		}
		p := buf[:k]
		fromAddr, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if len(p) >= 16 && p[12] == sctpInitAck && fromAddr.Unmap() == dst &&
			binary.BigEndian.Uint16(p[0:]) == port && binary.BigEndian.Uint16(p[2:]) == sport &&
			binary.BigEndian.Uint32(p[4:]) == tag {
			return true, nil
		}
	}
}

// probe says whether a new connection from n to dst:port over proto gets
// through within timeout.
func probe(n *harness.NetNS, dst netip.Addr, proto corev1.Protocol, port int32, timeout time.Duration) (bool, error) {
	ap := netip.AddrPortFrom(dst, uint16(port)).String()
	switch proto {
	case corev1.ProtocolTCP:
		var c net.Conn
		err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = net.DialTimeout("tcp", ap, timeout)
			return err
		})
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, nil
			}
			return false, err
		}
		c.Close()
		return true, nil
	case corev1.ProtocolUDP:
		var c net.Conn
		if err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = net.Dial("udp", ap)
			return err
		}); err != nil {
			return false, err
		}
		defer c.Close()
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		if _, err := c.Write(nonce); err != nil {
			return false, err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		for {
			k, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return false, nil
				}
				return false, err
			}
			if bytes.Equal(buf[:k], nonce) {
				return true, nil
			}
		}
	case corev1.ProtocolSCTP:
		return probeSCTP(n, dst, uint16(port), timeout)
	}
	return false, fmt.Errorf("protocol %s", proto)
}

// cell is one probe of the truth table.
type cell struct {
	src   *labPod // nil: the node
	dst   *labPod
	fam   int
	proto corev1.Protocol
	port  int32
	want  bool
	got   bool
	err   error
}

func (c *cell) String() string {
	src := "node"
	if c.src != nil {
		src = c.src.pod.Namespace + "/" + c.src.pod.Name
	}
	return fmt.Sprintf("IPv%d %-5s → %s %s/%d", c.fam, src, c.dst.pod.Namespace+"/"+c.dst.pod.Name, c.proto, c.port)
}

func (l *lab) srcNS(c *cell) *harness.NetNS {
	if c.src == nil {
		return l.node
	}
	return c.src.ns
}

func (c *cell) dstAddr() netip.Addr {
	if c.fam == 4 {
		return c.dst.v4
	}
	return c.dst.v6
}

// probeAll probes cells with `workers` probes in flight.
func (l *lab) probeAll(ctx context.Context, cells []*cell, workers int, timeout time.Duration) {
	ch := make(chan *cell)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range ch {
				c.got, c.err = probe(l.srcNS(c), c.dstAddr(), c.proto, c.port, timeout)
			}
		})
	}
	for _, c := range cells {
		select {
		case ch <- c:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
}
