package cni_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/flatnet-io/flatnet/cni"
	"github.com/flatnet-io/flatnet/test/harness"
)

// nodeState is everything a failed ADD could leave behind: flatnet's veths and
// routes on the node, its IPAM allocations, and the pod's interfaces.
type nodeState struct {
	veths, routes, podLinks []string
	allocs                  int
}

func (n *node) state(t *testing.T, pod *harness.NetNS) nodeState {
	t.Helper()
	var s nodeState
	s.veths, s.routes, s.allocs = n.flatnetState(t)
	if pod != nil {
		s.podLinks = pod.Links(t)
	}
	return s
}

func (s nodeState) String() string {
	return fmt.Sprintf("veths %v, routes %v, %d allocations, pod links %v", s.veths, s.routes, s.allocs, s.podLinks)
}

// execADD runs the built plugin with stdin and the CNI variables of args
// inside the node, exactly as a runtime would, bypassing libcni's own checks
// so that the plugin sees the bad input.
func (n *node) execADD(t *testing.T, stdin []byte, args *invoke.Args) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.rt.Node.Do(func(ns.NetNS) error {
		_, err := invoke.ExecPluginWithResult(ctx, harness.Bin("flatnet"), stdin, args, nil)
		return err
	})
}

// TestPrivilegedBadInputChangesNothing feeds the plugin each kind of bad input
// and failure the issue lists, asserts the CNI error code and that the message
// names the problem, and that the node, the pod and IPAM are as they were.
func TestPrivilegedBadInputChangesNothing(t *testing.T) {
	// Two addresses in all, and no borrowing: the third pod finds the pool exhausted.
	n := newNode(t, harness.AgentConfig{Pools: []harness.Pool{{Name: "tiny", CIDR: "10.244.7.0/31", BlockSize: 31}}, StrictAffinity: true}, "")
	good := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "flatnet", "type": "flatnet", "agentSocket": %q}`, n.agent.Socket)
	with := func(extra string) []byte { return []byte(strings.TrimSuffix(good, "}") + ", " + extra + "}") }
	addArgs := func(p *harness.Pod) *invoke.Args {
		return &invoke.Args{Command: "ADD", ContainerID: p.ID, NetNS: "/run/netns/" + p.Name, IfName: "eth0",
			PluginArgs: p.Labels, Path: harness.Root() + "/bin"}
	}

	cases := []struct {
		name     string
		stdin    []byte
		args     func(p *harness.Pod) *invoke.Args
		setup    func(t *testing.T, p *harness.Pod)
		teardown func(t *testing.T, p *harness.Pod)
		code     uint
		says     string
	}{
		{name: "malformed JSON", stdin: []byte(`{"cniVersion": "1.1.0", "name": "flatnet", "type": "flatnet",`),
			code: 6, says: "network config"},
		{name: "unknown cniVersion", stdin: []byte(`{"cniVersion": "9.9.9", "name": "flatnet", "type": "flatnet"}`),
			code: 1, says: "9.9.9"},
		{name: "missing CNI_NETNS", args: func(p *harness.Pod) *invoke.Args { a := addArgs(p); a.NetNS = ""; return a },
			code: 4, says: "CNI_NETNS"},
		{name: "netns does not exist", args: func(p *harness.Pod) *invoke.Args { a := addArgs(p); a.NetNS = "/run/netns/no-such-pod"; return a },
			code: 3, says: "/run/netns/no-such-pod"},
		{name: "interface name taken",
			setup: func(t *testing.T, p *harness.Pod) {
				p.MustExec(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
			},
			code: 4, says: `"eth0" already exists`},
		{name: "ipam section", stdin: with(`"ipam": {"type": "host-local"}`), code: 7, says: "host-local"},
		{name: "bad mtu", stdin: with(`"mtu": -1`), code: 7, says: "mtu -1"},
		{name: "bad agentTimeout", stdin: with(`"agentTimeout": "soon"`), code: 7, says: "agentTimeout"},
		{name: "agent unreachable", stdin: with(`"agentSocket": "/run/flatnet-test-nothing-here.sock"`),
			code: 11, says: "/run/flatnet-test-nothing-here.sock"},
		// The kernel refuses a veth below 68 bytes: IPAM has allocated by then,
		// and the plugin must give the address back.
		{name: "veth creation fails after allocation", stdin: with(`"mtu": 60`), code: 5, says: "create veth"},
		// Someone else's route to the address the pod is about to get: the
		// plugin has made the veth and configured the pod when the host route
		// fails; all of it must go, and the other route must stay.
		{name: "host route fails midway",
			setup: func(t *testing.T, p *harness.Pod) {
				n.MustExec(t, "ip", "route", "add", "10.244.7.0/32", "dev", "lo", "proto", "static")
			},
			teardown: func(t *testing.T, p *harness.Pod) {
				n.MustExec(t, "ip", "route", "del", "10.244.7.0/32", "dev", "lo", "proto", "static")
			},
			code: 5, says: "10.244.7.0/32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := harness.NewPod(t, "bad")
			if c.setup != nil {
				c.setup(t, p)
			}
			before := n.state(t, p.NetNS)
			stdin, args := c.stdin, addArgs
			if stdin == nil {
				stdin = []byte(good)
			}
			if c.args != nil {
				args = c.args
			}
			err := n.execADD(t, stdin, args(p))
			if code := cniCode(err); code != c.code || !strings.Contains(err.Error(), c.says) {
				t.Errorf("ADD: code %d, error %v; want code %d naming %q", code, err, c.code, c.says)
			}
			if after := n.state(t, p.NetNS); after.String() != before.String() {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
			}
			if c.name == "host route fails midway" && !slices.Contains(n.Routes(t, "-4"), "10.244.7.0 dev lo proto static scope link") {
				t.Errorf("the other route to 10.244.7.0 was touched: %q", n.Routes(t, "-4"))
			}
			if c.teardown != nil {
				c.teardown(t, p)
			}
		})
	}

	t.Run("pool exhausted", func(t *testing.T) {
		first, _ := n.add(t, "first")
		second, _ := n.add(t, "second")
		p := harness.NewPod(t, "third")
		before := n.state(t, p.NetNS)
		_, err := n.rt.Add(p)
		if code := cniCode(err); code != cni.ErrPoolExhausted || !strings.Contains(err.Error(), "exhausted") {
			t.Errorf("ADD into a full pool: code %d, %v; want %d, pool exhausted", code, err, cni.ErrPoolExhausted)
		}
		if after := n.state(t, p.NetNS); after.String() != before.String() {
			t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
		}
		// STATUS says what ADD found, and recovers when an address is free again.
		if err := n.rt.Status(); cniCode(err) != 50 || !strings.Contains(err.Error(), "IPv4") {
			t.Errorf("STATUS with the pool full: %v; want code 50 naming IPv4", err)
		}
		for _, p := range []*harness.Pod{first, second} {
			if err := n.rt.Del(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.rt.Status(); err != nil {
			t.Errorf("STATUS with room again: %v", err)
		}
		n.wantNothingLeft(t, "pool-exhausted case")
	})
}

// TestPrivilegedDualStackHalfExhausted: the IPv4 address is allocated, the
// IPv6 pool is full; the IPv4 address must go back.
func TestPrivilegedDualStackHalfExhausted(t *testing.T) {
	n := newNode(t, harness.AgentConfig{StrictAffinity: true, Pools: []harness.Pool{
		{Name: "v4", CIDR: "10.244.0.0/24", BlockSize: 26},
		{Name: "v6", CIDR: "fd00:10:244::/128", BlockSize: 128},
	}}, "")
	first, _ := n.add(t, "first")
	p := harness.NewPod(t, "second")
	before := n.state(t, p.NetNS)
	if _, err := n.rt.Add(p); cniCode(err) != cni.ErrPoolExhausted {
		t.Errorf("ADD with IPv6 exhausted: %v; want code %d", err, cni.ErrPoolExhausted)
	}
	if after := n.state(t, p.NetNS); after.String() != before.String() {
		t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
	}
	if err := n.rt.Status(); cniCode(err) != 50 || !strings.Contains(err.Error(), "IPv6") || strings.Contains(err.Error(), "IPv4") {
		t.Errorf("STATUS: %v; want code 50 naming IPv6 only", err)
	}
	if err := n.rt.Del(first); err != nil {
		t.Fatal(err)
	}
	n.wantNothingLeft(t, "dual-stack half-exhausted case")
}
