package harness

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
)

// NetNS is a named network namespace that lives until the test ends.
type NetNS struct {
	Name string
	ns.NetNS
}

// NewNetNS makes a namespace with lo up.
func NewNetNS(t testing.TB, hint string) *NetNS {
	t.Helper()
	name := Name(hint)
	MustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _, _ = Run("ip", "netns", "del", name) })
	h, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	n := &NetNS{Name: name, NetNS: h}
	n.MustExec(t, "ip", "link", "set", "lo", "up")
	return n
}

// InNS runs fn with the calling goroutine in the named network namespace (one
// under /run/netns) and returns what fn returns; sockets made there stay there.
func InNS[T any](name string, fn func() (T, error)) (T, error) {
	var out T
	h, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		return out, err
	}
	defer h.Close()
	err = h.Do(func(ns.NetNS) error {
		var err error
		out, err = fn()
		return err
	})
	return out, err
}

// Exec runs a command inside the namespace.
func (n *NetNS) Exec(args ...string) (string, error) {
	return Run("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// MustExec is Exec that fails t.
func (n *NetNS) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Ping sends one ICMP echo from the namespace to dst and reports whether a reply came.
func (n *NetNS) Ping(dst netip.Addr) error {
	_, err := n.Exec("ping", "-c", "1", "-W", "2", dst.String())
	return err
}

// Listen opens a TCP listener inside the namespace; it stays there.
func (n *NetNS) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var lis net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

// Dial connects from inside the namespace.
func (n *NetNS) Dial(addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	return c, err
}

// TCPSource connects from n to lis (in any namespace) at addr and returns the
// source address the listener saw: with no NAT it is n's own address.
func TCPSource(t testing.TB, from *NetNS, lis net.Listener, addr string) (netip.Addr, error) {
	t.Helper()
	accepted := make(chan netip.Addr, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			close(accepted)
			return
		}
		defer c.Close()
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		accepted <- ap.Addr().Unmap()
	}()
	c, err := from.Dial(addr)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	select {
	case a := <-accepted:
		return a, nil
	case <-time.After(3 * time.Second):
		return netip.Addr{}, net.ErrClosed
	}
}

// Links lists the namespace's interfaces as "name kind" ("fln0123 veth", "lo device").
func (n *NetNS) Links(t testing.TB) []string {
	t.Helper()
	var out []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			out = append(out, l.Attrs().Name+" "+l.Type())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Routes lists the namespace's routes of one family as `ip route` prints them.
func (n *NetNS) Routes(t testing.TB, family string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(n.MustExec(t, "ip", family, "route", "show", "table", "all"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}
