package gobgp

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/flatnet-io/flatnet/bgp"
)

// describe renders a policy as "statement: conditions -> action" lines, with
// each set's members, for comparison.
func describe(p policy) []string {
	sets := map[string]string{}
	for _, s := range p.sets {
		var members []string
		members = append(members, s.List...)
		for _, pr := range s.Prefixes {
			members = append(members, fmt.Sprintf("%s %d..%d", pr.IpPrefix, pr.MaskLengthMin, pr.MaskLengthMax))
		}
		sets[s.Name] = "[" + strings.Join(members, ", ") + "]"
	}
	var out []string
	for _, st := range p.policy.Statements {
		c := st.Conditions
		var conds []string
		if c.RouteType != api.Conditions_ROUTE_TYPE_UNSPECIFIED {
			conds = append(conds, c.RouteType.String())
		}
		if c.NeighborSet != nil {
			conds = append(conds, "from/to "+sets[c.NeighborSet.Name])
		}
		if c.PrefixSet != nil {
			conds = append(conds, "prefix in "+sets[c.PrefixSet.Name])
		}
		name := strings.TrimPrefix(st.Name, p.policy.Name+"-")
		out = append(out, fmt.Sprintf("%s: %s -> %s", name, strings.Join(conds, " "), st.Actions.RouteAction))
	}
	return out
}

func TestBuildImport(t *testing.T) {
	in := policyInput{
		pools:     []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00::/56")},
		ownBlocks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/22")},
		mesh:      []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		explicit: []bgp.Peer{
			{Address: netip.MustParseAddr("192.0.2.1")},
			{Address: netip.MustParseAddr("192.0.2.9"), Import: bgp.ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, AllowDefault: true}},
		},
	}
	want := []string{
		"local: ROUTE_TYPE_LOCAL -> ROUTE_ACTION_ACCEPT",
		"allow-default-v4: from/to [192.0.2.9/32] prefix in [0.0.0.0/0 0..0] -> ROUTE_ACTION_ACCEPT",
		"own-blocks-v4: prefix in [10.244.0.0/22 22..32, 10.244.0.0/21 21..21, 10.244.0.0/20 20..20, 10.244.0.0/19 19..19, 10.244.0.0/18 18..18, 10.244.0.0/17 17..17, 10.244.0.0/16 16..16, 10.244.0.0/15 15..15, 10.244.0.0/14 14..14, 10.240.0.0/13 13..13, 10.240.0.0/12 12..12, 10.224.0.0/11 11..11, 10.192.0.0/10 10..10, 10.128.0.0/9 9..9, 10.0.0.0/8 8..8, 10.0.0.0/7 7..7, 8.0.0.0/6 6..6, 8.0.0.0/5 5..5, 0.0.0.0/4 4..4, 0.0.0.0/3 3..3, 0.0.0.0/2 2..2, 0.0.0.0/1 1..1] -> ROUTE_ACTION_REJECT",
		"no-default-v4: prefix in [0.0.0.0/0 0..0] -> ROUTE_ACTION_REJECT",
		"mesh-v4: from/to [192.0.2.2/32] prefix in [10.244.0.0/16 16..32] -> ROUTE_ACTION_ACCEPT",
		"peer-192.0.2.1-v4: from/to [192.0.2.1/32] prefix in [10.244.0.0/16 16..32] -> ROUTE_ACTION_ACCEPT",
		"peer-192.0.2.9-v4: from/to [192.0.2.9/32] prefix in [0.0.0.0/0 1..32] -> ROUTE_ACTION_ACCEPT",
		"allow-default-v6: from/to [192.0.2.9/32] prefix in [::/0 0..0] -> ROUTE_ACTION_ACCEPT",
		"no-default-v6: prefix in [::/0 0..0] -> ROUTE_ACTION_REJECT",
		"mesh-v6: from/to [192.0.2.2/32] prefix in [fd00::/56 56..128] -> ROUTE_ACTION_ACCEPT",
		"peer-192.0.2.1-v6: from/to [192.0.2.1/32] prefix in [fd00::/56 56..128] -> ROUTE_ACTION_ACCEPT",
	}
	if diff := cmp.Diff(want, describe(buildImport(in))); diff != "" {
		t.Errorf("import policy (-want +got):\n%s", diff)
	}
}

// TestPolicyLeavesOutEmptySets: GoBGP's neighbor condition matches every
// peer when its set is empty, so no statement may name an empty set.
func TestPolicyLeavesOutEmptySets(t *testing.T) {
	got := describe(buildImport(policyInput{}))
	want := []string{
		"local: ROUTE_TYPE_LOCAL -> ROUTE_ACTION_ACCEPT",
		"no-default-v4: prefix in [0.0.0.0/0 0..0] -> ROUTE_ACTION_REJECT",
		"no-default-v6: prefix in [::/0 0..0] -> ROUTE_ACTION_REJECT",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("import policy without peers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"local: ROUTE_TYPE_LOCAL -> ROUTE_ACTION_ACCEPT"}, describe(buildExport(policyInput{}))); diff != "" {
		t.Errorf("export policy without reflection (-want +got):\n%s", diff)
	}
	got = describe(buildExport(policyInput{reflectTo: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}))
	if want := "reflect: ROUTE_TYPE_INTERNAL from/to [2001:db8::1/128] -> ROUTE_ACTION_ACCEPT"; len(got) != 2 || got[1] != want {
		t.Errorf("export policy with reflection = %q, want its second statement %q", got, want)
	}
}

func TestPolicyEqual(t *testing.T) {
	a := buildImport(policyInput{mesh: []netip.Addr{netip.MustParseAddr("192.0.2.2")}})
	b := buildImport(policyInput{mesh: []netip.Addr{netip.MustParseAddr("192.0.2.2")}})
	c := buildImport(policyInput{mesh: []netip.Addr{netip.MustParseAddr("192.0.2.3")}})
	if !a.equal(b) || a.equal(c) {
		t.Errorf("equal: same input %v, different input %v; want true, false", a.equal(b), a.equal(c))
	}
}

func TestBestRoute(t *testing.T) {
	prefix := netip.MustParsePrefix("10.244.1.0/26")
	learned := func(peer, nextHop string, best bool) *apiutil.Path {
		nh, _ := bgppkt.NewPathAttributeNextHop(netip.MustParseAddr(nextHop))
		return &apiutil.Path{Best: best, PeerAddress: netip.MustParseAddr(peer), Attrs: []bgppkt.PathAttributeInterface{nh}}
	}
	v6 := func(nextHop string) *apiutil.Path {
		nlri, _ := bgppkt.NewIPAddrPrefix(netip.MustParsePrefix("fd00::/122"))
		mp, _ := bgppkt.NewPathAttributeMpReachNLRI(bgppkt.RF_IPv6_UC, []bgppkt.PathNLRI{{NLRI: nlri}}, netip.MustParseAddr(nextHop))
		return &apiutil.Path{Best: true, PeerAddress: netip.MustParseAddr("192.0.2.1"), Attrs: []bgppkt.PathAttributeInterface{mp}}
	}
	local := learned("192.0.2.1", "192.0.2.1", true)
	local.PeerAddress = netip.Addr{}
	tests := []struct {
		name  string
		paths []*apiutil.Path
		want  []string
	}{
		{"none", nil, nil},
		{"ECMP sorted, non-best left out", []*apiutil.Path{
			learned("192.0.2.3", "192.0.2.3", true), learned("192.0.2.2", "192.0.2.2", true), learned("192.0.2.4", "192.0.2.4", false),
		}, []string{"192.0.2.2", "192.0.2.3"}},
		{"same next hop twice", []*apiutil.Path{learned("192.0.2.5", "192.0.2.2", true), learned("192.0.2.6", "192.0.2.2", true)}, []string{"192.0.2.2"}},
		{"our own path among the best", []*apiutil.Path{learned("192.0.2.2", "192.0.2.2", true), local}, nil},
		{"IPv6 next hop from MP_REACH_NLRI", []*apiutil.Path{v6("fd00::b")}, []string{"fd00::b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bestRoute(prefix, tt.paths)
			var hops []string
			for _, nh := range got.NextHops {
				hops = append(hops, nh.String())
			}
			if diff := cmp.Diff(tt.want, hops); diff != "" || got.Prefix != prefix {
				t.Errorf("bestRoute() = %v (-want +got next hops):\n%s", got, diff)
			}
		})
	}
}

func TestLogHandlerRenamesGoBGPKeys(t *testing.T) {
	var buf bytes.Buffer
	h := newLogHandler(slog.NewTextHandler(&buf, nil))
	log := slog.New(h).With("Topic", "Peer", "Key", "192.0.2.1")
	log.Info("Peer Up", "State", "BGP_FSM_OPENCONFIRM", "Err", "boom")
	h.stopping.Store(true)
	log.Error("failed to stop BGP server", "Error", "BGP server is not running")
	got := buf.String()
	for _, want := range []string{"topic=Peer", "peer=192.0.2.1", "state=BGP_FSM_OPENCONFIRM", "err=boom"} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q does not contain %q", got, want)
		}
	}
	if strings.Contains(got, "failed to stop") {
		t.Errorf("log %q has the error Stop logs after StopBgp", got)
	}
}

func TestSessionState(t *testing.T) {
	tests := []struct {
		st   *api.PeerState
		want string
	}{
		{&api.PeerState{SessionState: api.PeerState_SESSION_STATE_ESTABLISHED}, bgp.StateEstablished},
		{&api.PeerState{SessionState: api.PeerState_SESSION_STATE_ACTIVE}, bgp.StateActive},
		{&api.PeerState{SessionState: api.PeerState_SESSION_STATE_IDLE, AdminState: api.PeerState_ADMIN_STATE_PFX_CT}, bgp.StatePrefixLimit},
		{nil, bgp.StateIdle},
	}
	for _, tt := range tests {
		if got := sessionState(tt.st); got != tt.want {
			t.Errorf("sessionState(%v) = %q, want %q", tt.st, got, tt.want)
		}
	}
}

func TestAPIPeer(t *testing.T) {
	s, err := New(bgp.Config{
		ASN:             64512,
		RouterID:        netip.MustParseAddr("192.0.2.10"),
		ListenAddresses: []netip.Addr{netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.10")},
		GracefulRestart: bgp.GracefulRestart{Enabled: true},
		RouteReflector:  bgp.RouteReflector{Enabled: true, ClusterID: netip.MustParseAddr("192.0.2.1")},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := s.apiPeer(bgp.Peer{
		Name: "tor", Address: netip.MustParseAddr("192.0.2.1"), Port: 1179, ASN: 65001, Password: "pw",
		Multihop: 3, HoldTime: 30 * time.Second, KeepaliveInterval: 10 * time.Second, Passive: true,
		MaxPrefixes: 100, BFD: &bgp.BFD{},
	}, true)
	checks := []struct {
		what      string
		got, want any
	}{
		{"password", p.Conf.AuthPassword, "pw"},
		{"remote port", p.Transport.RemotePort, uint32(1179)},
		{"passive", p.Transport.PassiveMode, true},
		{"local address: the listen address of the peer's family", p.Transport.LocalAddress, "192.0.2.10"},
		{"hold time", p.Timers.Config.HoldTime, uint64(30)},
		{"keepalive", p.Timers.Config.KeepaliveInterval, uint64(10)},
		{"connect retry: GoBGP's least, with BFD", p.Timers.Config.ConnectRetry, uint64(2)},
		{"idle hold after a reset (BFD down)", p.Timers.Config.IdleHoldTimeAfterReset, uint64(1)},
		{"multihop", p.EbgpMultihop.GetMultihopTtl(), uint32(3)},
		{"restart time (default)", p.GracefulRestart.RestartTime, uint32(120)},
		{"deferral time = converge timeout (default)", p.GracefulRestart.DeferralTime, uint32(60)},
		{"restarting", p.GracefulRestart.LocalRestarting, true},
		{"bfd interval (default, µs)", p.Bfd.GetDesiredMinimumTxInterval(), uint32(300000)},
		{"bfd multiplier (default)", p.Bfd.GetDetectionMultiplier(), uint32(3)},
		{"families", len(p.AfiSafis), 2},
		{"IPv6 unicast", bgppkt.NewFamily(uint16(p.AfiSafis[1].Config.Family.Afi), uint8(p.AfiSafis[1].Config.Family.Safi)), bgppkt.RF_IPv6_UC},
		{"graceful restart per family", p.AfiSafis[1].MpGracefulRestart.GetConfig().GetEnabled(), true},
		{"prefix limit per family", p.AfiSafis[1].PrefixLimits.GetMaxPrefixes(), uint32(100)},
		{"not a route reflector client", p.RouteReflector, (*api.RouteReflector)(nil)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	rr := s.apiPeer(bgp.Peer{Name: "n", Address: netip.MustParseAddr("192.0.2.2"), ASN: 64512, RRClient: true, Multihop: 3}, false)
	if rr.GetRouteReflector().GetRouteReflectorClusterId() != "192.0.2.1" || rr.EbgpMultihop != nil {
		t.Errorf("iBGP route reflector client: route reflector %v, multihop %v; want cluster 192.0.2.1, no multihop", rr.RouteReflector, rr.EbgpMultihop)
	}
	if rr.Bfd != nil || rr.Timers.Config.ConnectRetry != 5 {
		t.Errorf("peer without BFD: bfd %v, connect retry %d; want none, 5", rr.Bfd, rr.Timers.Config.ConnectRetry)
	}
}
