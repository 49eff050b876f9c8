package gobgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"google.golang.org/protobuf/proto"

	"github.com/flatnet-io/flatnet/bgp"
)

// connectRetry is how long GoBGP waits between attempts to open a session
// after the first (which it makes 2s after the peer is added). GoBGP's
// default, 120s, leaves a session down for two minutes after a lost
// connection collision or a peer that came up a moment too late.
const connectRetry = 5 * time.Second

// bfdConnectRetry is connectRetry for a peer with BFD, GoBGP's minimum: a
// BFD peer's session is reset as soon as the path fails, and once the path
// is back a new one should follow within a couple of seconds, not five.
// (GoBGP also bounds each attempt's connect by it, less a second but at
// least 2s.)
const bfdConnectRetry = 2 * time.Second

// idleHoldAfterReset is how long GoBGP holds a session idle after resetting
// it: BFD resets the session when the path fails. GoBGP's default, 30s, kept
// the session down for 30s after the path was back.
const idleHoldAfterReset = time.Second

// peerEntry is a configured peer: ours, and GoBGP's as we last gave it
// (without the restarting flag, which only matters when it is added).
type peerEntry struct {
	peer bgp.Peer
	conf *api.Peer
}

// SetPeers implements bgp.Speaker. The routing policy changes first, so that
// a new peer's routes meet the policy that knows it; removed peers get a
// Cease; a changed peer is updated by GoBGP, which resets the session only if
// the change must be renegotiated in OPEN.
func (s *Speaker) SetPeers(ctx context.Context, peers []bgp.Peer) error {
	if err := bgp.ValidatePeers(s.cfg, peers); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		return ErrNotRunning
	}
	want := make(map[netip.Addr]peerEntry, len(peers))
	for _, p := range peers {
		want[p.Address] = peerEntry{peer: p, conf: s.apiPeer(p, false)}
	}
	if err := s.applyPolicy(ctx, s.policyInput(s.adverts, want)); err != nil {
		return err
	}
	// Graceful restart's restarting flag belongs to the sessions that
	// resume: those of the first SetPeers after a restart.
	restarting := s.cfg.GracefulRestart.Enabled && s.cfg.GracefulRestart.Restarting && !s.peersSet

	var errs []error
	for addr, old := range s.peers {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %s (%v): %w", old.peer.Name, addr, err))
			continue
		}
		s.log.Info("bgp peer removed", "peer", old.peer.Name, "address", addr)
		delete(s.peers, addr)
		delete(s.limited, addr)
	}
	for _, p := range peers {
		e := want[p.Address]
		old, ok := s.peers[p.Address]
		switch {
		case !ok:
			if err := s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p, restarting)}); err != nil {
				errs = append(errs, fmt.Errorf("add peer %s (%v): %w", p.Name, p.Address, err))
				continue
			}
			s.log.Info("bgp peer added", "peer", p.Name, "address", p.Address, "asn", p.ASN, "mesh", p.Mesh)
		case old.peer.MaxPrefixes != p.MaxPrefixes:
			// GoBGP keeps a session it shut down for the prefix limit down
			// whatever the new limit: a new limit gets a new session.
			err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()})
			if err == nil {
				delete(s.peers, p.Address)
				delete(s.limited, p.Address)
				err = s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: e.conf})
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("re-add peer %s (%v) with a new prefix limit: %w", p.Name, p.Address, err))
				continue
			}
			s.log.Info("bgp peer re-added with a new prefix limit", "peer", p.Name, "address", p.Address, "max_prefixes", p.MaxPrefixes)
		case !proto.Equal(old.conf, e.conf):
			if err := s.updatePeer(ctx, e.conf); err != nil {
				errs = append(errs, fmt.Errorf("update peer %s (%v): %w", p.Name, p.Address, err))
				continue
			}
			s.log.Info("bgp peer updated", "peer", p.Name, "address", p.Address)
		}
		s.peers[p.Address] = e
	}
	names := make(map[netip.Addr]string, len(s.peers))
	for a, e := range s.peers {
		names[a] = e.peer.Name
	}
	s.mon.setPeers(names)
	if len(errs) == 0 {
		s.peersSet = true
	}
	return errors.Join(errs...)
}

// updatePeer has GoBGP update a peer, and re-apply import policy to its
// routes if GoBGP says the change needs it (it does not do so itself, its
// DoSoftResetIn notwithstanding).
func (s *Speaker) updatePeer(ctx context.Context, conf *api.Peer) error {
	resp, err := s.server.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: conf})
	if err != nil || !resp.NeedsSoftResetIn {
		return err
	}
	return s.softReset(ctx, conf.Conf.NeighborAddress, api.ResetPeerRequest_DIRECTION_IN)
}

// softReset has GoBGP re-apply policy to what peer (all: "") sent us, what
// we sent it, or both.
func (s *Speaker) softReset(ctx context.Context, peer string, dir api.ResetPeerRequest_Direction) error {
	s.mon.pathsMu.Lock()
	defer s.mon.pathsMu.Unlock()
	return s.server.ResetPeer(ctx, &api.ResetPeerRequest{Address: peer, Soft: true, Direction: dir})
}

// policyInput is what the routing policy is made of, for adverts and peers.
func (s *Speaker) policyInput(adverts map[netip.Prefix]netip.Addr, peers map[netip.Addr]peerEntry) policyInput {
	in := policyInput{pools: s.cfg.Pools}
	for p := range adverts {
		if p.Bits() < p.Addr().BitLen() {
			in.ownBlocks = append(in.ownBlocks, p)
		}
	}
	for addr, e := range peers {
		switch {
		case e.peer.Mesh:
			in.mesh = append(in.mesh, addr)
		default:
			in.explicit = append(in.explicit, e.peer)
		}
		if s.cfg.RouteReflector.Enabled && (e.peer.Mesh || e.peer.RRClient) {
			in.reflectTo = append(in.reflectTo, addr)
		}
	}
	// Sorted, so that the same input always makes the same policy.
	slices.SortFunc(in.ownBlocks, netip.Prefix.Compare)
	slices.SortFunc(in.mesh, netip.Addr.Compare)
	slices.SortFunc(in.reflectTo, netip.Addr.Compare)
	slices.SortFunc(in.explicit, func(a, b bgp.Peer) int { return a.Address.Compare(b.Address) })
	return in
}

// applyPolicy installs the policy for in if it differs from the installed
// one, and has GoBGP re-apply it to what peers sent (soft reset in) or to
// what we sent them (soft reset out).
func (s *Speaker) applyPolicy(ctx context.Context, in policyInput) error {
	imp, exp := buildImport(in), buildExport(in)
	impChanged, expChanged := !imp.equal(s.imp), !exp.equal(s.exp)
	if !impChanged && !expChanged {
		return nil
	}
	if err := s.server.SetPolicies(ctx, request(imp, exp)); err != nil {
		return fmt.Errorf("set bgp policies: %w", err)
	}
	s.imp, s.exp = imp, exp
	if impChanged {
		s.mon.policyChanged(newClassifier(in, s.cfg.ASN, s.cfg.RouterID))
	}
	dir := api.ResetPeerRequest_DIRECTION_BOTH
	switch {
	case !expChanged:
		dir = api.ResetPeerRequest_DIRECTION_IN
	case !impChanged:
		dir = api.ResetPeerRequest_DIRECTION_OUT
	}
	if err := s.softReset(ctx, "", dir); err != nil {
		return fmt.Errorf("re-apply bgp policies: %w", err)
	}
	return nil
}

// apiPeer is GoBGP's configuration for p.
func (s *Speaker) apiPeer(p bgp.Peer, restarting bool) *api.Peer {
	gr := s.cfg.GracefulRestart
	conf := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Transport: &api.Transport{
			RemotePort:   uint32(p.Port),
			PassiveMode:  p.Passive,
			LocalAddress: s.localAddress(p.Address),
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           seconds(connectRetry),
			HoldTime:               seconds(p.HoldTime),
			KeepaliveInterval:      seconds(p.KeepaliveInterval),
			IdleHoldTimeAfterReset: seconds(idleHoldAfterReset),
		}},
		GracefulRestart: &api.GracefulRestart{
			Enabled:         gr.Enabled,
			RestartTime:     uint32(seconds(gr.RestartTime)),
			DeferralTime:    uint32(min(seconds(s.cfg.ConvergeTimeout), 65535)),
			LocalRestarting: restarting,
		},
	}
	if p.Multihop > 0 && p.ASN != s.cfg.ASN {
		conf.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if p.RRClient {
		conf.RouteReflector = &api.RouteReflector{RouteReflectorClient: true}
		if id := s.cfg.RouteReflector.ClusterID; id.IsValid() {
			conf.RouteReflector.RouteReflectorClusterId = id.String()
		}
	}
	if b := p.BFD; b != nil {
		conf.Timers.Config.ConnectRetry = seconds(bfdConnectRetry)
		interval := uint32(cmp.Or(b.Interval, bgp.DefaultBFDInterval) / time.Microsecond)
		conf.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: interval,
			RequiredMinimumReceive:   interval,
			DetectionMultiplier:      cmp.Or(b.Multiplier, bgp.DefaultBFDMultiplier),
		}
	}
	for _, f := range families {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true}}
		if gr.Enabled {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		if p.MaxPrefixes > 0 {
			af.PrefixLimits = &api.PrefixLimit{Family: apiFamily(f), MaxPrefixes: p.MaxPrefixes}
		}
		conf.AfiSafis = append(conf.AfiSafis, af)
	}
	return conf
}

// localAddress is the address sessions to peer are opened from: the first
// listen address of its family, or "" for the kernel's choice.
func (s *Speaker) localAddress(peer netip.Addr) string {
	for _, a := range s.cfg.ListenAddresses {
		if a.Is4() == peer.Is4() && !a.IsUnspecified() {
			return a.String()
		}
	}
	return ""
}

func seconds(d time.Duration) uint64 {
	return uint64(d / time.Second)
}
