package netns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
)

// NS is a named namespace with an open handle: Do runs code inside it.
type NS struct {
	Name string
	ns.NetNS
}

// New makes a namespace with its loopback up and opens it. Close deletes it.
func New(name string) (*NS, error) {
	if err := Add(name); err != nil {
		return nil, err
	}
	h, err := ns.GetNS(Path(name))
	if err != nil {
		_, _ = Run("ip", "netns", "del", name)
		return nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	return &NS{Name: name, NetNS: h}, nil
}

// Close closes the handle and deletes the namespace. Processes still in it
// keep it alive, unnamed, until they end: stop them first.
func (n *NS) Close() error {
	n.NetNS.Close()
	if !Exists(n.Name) {
		return nil
	}
	_, err := Run("ip", "netns", "del", n.Name)
	return err
}

// Exec runs a command inside the namespace.
func (n *NS) Exec(args ...string) (string, error) { return Exec(n.Name, args...) }

// Ping sends one ICMP echo from the namespace to dst and says whether a
// reply came within two seconds.
func (n *NS) Ping(dst netip.Addr) error {
	_, err := n.Exec("ping", "-c", "1", "-W", "2", dst.String())
	return err
}

// Listen opens a TCP listener inside the namespace; it stays there.
func (n *NS) Listen(addr string) (net.Listener, error) {
	var lis net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err
	})
	return lis, err
}

// Dial connects over TCP from inside the namespace, giving up after three
// seconds.
func (n *NS) Dial(addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	return c, err
}

// TCPSource connects from n to lis (in any namespace) at addr and returns
// the source address the listener saw: with no NAT it is n's own address.
func (n *NS) TCPSource(lis net.Listener, addr string) (netip.Addr, error) {
	accepted := make(chan netip.Addr, 1)
	go func() {
		defer close(accepted)
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		accepted <- ap.Addr().Unmap()
	}()
	c, err := n.Dial(addr)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	select {
	case a, ok := <-accepted:
		if !ok {
			return netip.Addr{}, fmt.Errorf("accept on %s failed", lis.Addr())
		}
		return a, nil
	case <-time.After(3 * time.Second):
		return netip.Addr{}, fmt.Errorf("connected to %s, but its listener accepted nothing in 3s", addr)
	}
}

// Links lists the namespace's interfaces as "name kind" ("fln0123 veth",
// "lo device").
func (n *NS) Links() ([]string, error) {
	var out []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			out = append(out, l.Attrs().Name+" "+l.Type())
		}
		return err
	})
	return out, err
}

// Routes lists the namespace's routes of one family ("-4", "-6") in every
// table, as `ip route` prints them.
func (n *NS) Routes(family string) ([]string, error) {
	s, err := n.Exec("ip", family, "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}
