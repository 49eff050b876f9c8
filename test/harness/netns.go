package harness

import (
	"net"
	"net/netip"
	"testing"

	"github.com/flatnet-io/flatnet/lab/netns"
)

// NetNS is a named network namespace that lives until the test ends.
type NetNS struct {
	*netns.NS
}

// NewNetNS makes a namespace with lo up, named after hint and unique to
// this test process.
func NewNetNS(t testing.TB, hint string) *NetNS {
	t.Helper()
	n, err := netns.New(Name(hint))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return &NetNS{NS: n}
}

// MustExec runs a command inside the namespace and fails t if it fails.
func (n *NetNS) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Listen opens a TCP listener inside the namespace until the test ends.
func (n *NetNS) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	lis, err := n.NS.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

// TCPSource connects from one namespace to lis (in any namespace) at addr
// and returns the source address the listener saw: with no NAT it is from's
// own address.
func TCPSource(t testing.TB, from *NetNS, lis net.Listener, addr string) (netip.Addr, error) {
	t.Helper()
	return from.TCPSource(lis, addr)
}

// Links lists the namespace's interfaces as "name kind" ("fln0123 veth",
// "lo device").
func (n *NetNS) Links(t testing.TB) []string {
	t.Helper()
	links, err := n.NS.Links()
	if err != nil {
		t.Fatal(err)
	}
	return links
}

// Routes lists the namespace's routes of one family as `ip route` prints them.
func (n *NetNS) Routes(t testing.TB, family string) []string {
	t.Helper()
	routes, err := n.NS.Routes(family)
	if err != nil {
		t.Fatal(err)
	}
	return routes
}
