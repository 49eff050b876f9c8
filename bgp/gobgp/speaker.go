package gobgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/server"
	"google.golang.org/protobuf/proto"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/internal/feed"
)

// Options are a Speaker's dependencies.
type Options struct {
	// Logger receives the speaker's logs and GoBGP's (keys renamed to
	// flatnet's: "peer", "err", "prefix"). nil discards them.
	Logger *slog.Logger
}

// ErrNotRunning is returned by the methods that need a running speaker.
var ErrNotRunning = errors.New("bgp speaker not running")

type runState int

const (
	idle runState = iota
	running
	stopped
)

// Speaker is a bgp.Speaker backed by an embedded GoBGP server.
type Speaker struct {
	cfg    bgp.Config
	log    *slog.Logger
	logs   *logHandler
	routes *feed.Feed
	mon    *monitor // set by Start

	mu       sync.Mutex // held by Start, Stop, SetAdvertised and SetPeers: one writer
	state    runState
	server   *server.BgpServer
	cancel   context.CancelFunc // stops the monitor
	adverts  map[netip.Prefix]netip.Addr
	peers    map[netip.Addr]peerEntry
	peersSet bool // SetPeers succeeded once
	imp, exp policy
	// limited are the peers shut down for exceeding their prefix limit,
	// held administratively down until SetPeers changes them.
	limited map[netip.Addr]bool
}

var _ bgp.Speaker = (*Speaker)(nil)

// New returns a speaker for cfg, not started. Zero values in cfg get their
// documented defaults.
func New(cfg bgp.Config, opts Options) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp config: %w", err)
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = bgp.DefaultPort
	}
	if cfg.GracefulRestart.RestartTime == 0 {
		cfg.GracefulRestart.RestartTime = bgp.DefaultRestartTime
	}
	if cfg.ConvergeTimeout == 0 {
		cfg.ConvergeTimeout = bgp.DefaultConvergeTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Speaker{
		cfg:     cfg,
		log:     log,
		logs:    newLogHandler(log.Handler()),
		routes:  feed.New(),
		adverts: map[netip.Prefix]netip.Addr{},
		peers:   map[netip.Addr]peerEntry{},
		limited: map[netip.Addr]bool{},
	}
	s.mon = newMonitor(nil, log, s.routes)
	s.mon.onPrefixLimit = s.purgeLimited
	return s, nil
}

// Start implements bgp.Speaker: it starts GoBGP, installs the routing
// policy and starts watching GoBGP's events.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != idle {
		return errors.New("bgp speaker already started")
	}
	opts := []server.ServerOption{server.LoggerOption(slog.New(s.logs).With("component", "gobgp"), nil)}
	if s.cfg.APIListen != "" {
		opts = append(opts, server.GrpcListenAddress(s.cfg.APIListen))
	}
	srv := server.NewBgpServer(opts...)
	go srv.Serve()
	if err := s.start(ctx, srv); err != nil {
		s.logs.stopping.Store(true)
		srv.Stop()
		return err
	}
	s.server, s.state = srv, running
	s.log.Info("bgp speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID, "port", s.cfg.ListenPort)
	return nil
}

func (s *Speaker) start(ctx context.Context, srv *server.BgpServer) error {
	global := &api.Global{
		Asn:              s.cfg.ASN,
		RouterId:         s.cfg.RouterID.String(),
		ListenPort:       s.cfg.ListenPort,
		UseMultiplePaths: s.cfg.Multipath,
		Families: []uint32{
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]),
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST]),
		},
	}
	for _, a := range s.cfg.ListenAddresses {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		return fmt.Errorf("start bgp: %w", err)
	}
	in := s.policyInput(s.adverts, s.peers)
	s.imp, s.exp = buildImport(in), buildExport(in)
	s.mon.rejects.setPolicy(newClassifier(in, s.cfg.ASN, s.cfg.RouterID))
	if err := srv.SetPolicies(ctx, request(s.imp, s.exp)); err != nil {
		return fmt.Errorf("set bgp policies: %w", err)
	}
	for _, a := range []*api.PolicyAssignment{
		{Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: reject},
		{Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT, Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: reject},
	} {
		if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("assign bgp policy %s: %w", a.Policies[0].Name, err)
		}
	}
	watchCtx, cancel := context.WithCancel(context.Background())
	s.mon.server = srv
	if err := s.mon.watch(watchCtx, s.cfg.ConvergeTimeout); err != nil {
		cancel()
		return fmt.Errorf("watch bgp events: %w", err)
	}
	s.cancel = cancel
	return nil
}

// Stop implements bgp.Speaker. Graceful or not, GoBGP closes every session
// (StopBgp); graceful asks it not to send a NOTIFICATION to the peers that
// negotiated graceful restart, so that they keep our routes.
func (s *Speaker) Stop(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case idle:
		return ErrNotRunning
	case stopped:
		return nil
	}
	s.state = stopped
	s.cancel()
	<-s.mon.exited // it reads GoBGP's process-wide settings, which the next StartBgp writes
	s.logs.stopping.Store(true)
	done := make(chan error, 1)
	go func() {
		err := s.server.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful})
		// Stop also stops the BFD server and the gRPC API; the StopBgp it
		// starts with fails, and logHandler drops the error it logs.
		s.server.Stop()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("stop bgp: %w", err)
		}
		s.log.Info("bgp speaker stopped", "graceful", graceful)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop bgp: %w", ctx.Err())
	}
}

// SetAdvertised implements bgp.Speaker.
func (s *Speaker) SetAdvertised(ctx context.Context, adverts []bgp.Advert) error {
	if err := bgp.ValidateAdverts(adverts); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		return ErrNotRunning
	}
	want := make(map[netip.Prefix]netip.Addr, len(adverts))
	for _, a := range adverts {
		want[a.Prefix] = a.NextHop
	}
	// Reject imports that overlap a new block before announcing it.
	if err := s.applyPolicy(ctx, s.policyInput(want, s.peers)); err != nil {
		return err
	}
	var errs []error
	var add []*apiutil.Path
	var added []bgp.Advert
	for p, nh := range want {
		if old, ok := s.adverts[p]; ok && old == nh {
			continue
		}
		path, err := advertPath(bgp.Advert{Prefix: p, NextHop: nh})
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %v: %w", p, err))
			continue
		}
		add, added = append(add, path), append(added, bgp.Advert{Prefix: p, NextHop: nh})
	}
	if len(add) > 0 {
		resps, err := s.server.AddPath(apiutil.AddPathRequest{Paths: add})
		for i, a := range added {
			switch {
			case len(resps) != len(added): // GoBGP failed them all
				errs = append(errs, fmt.Errorf("advertise %v: %w", a.Prefix, err))
			case resps[i].Error != nil:
				errs = append(errs, fmt.Errorf("advertise %v: %w", a.Prefix, resps[i].Error))
			default:
				s.adverts[a.Prefix] = a.NextHop
			}
		}
	}
	var del []*apiutil.Path
	var deleted []netip.Prefix
	for p := range s.adverts {
		if _, ok := want[p]; ok {
			continue
		}
		path, err := withdrawPath(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", p, err))
			continue
		}
		del, deleted = append(del, path), append(deleted, p)
	}
	if len(del) > 0 {
		if err := s.server.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", deleted, err))
		} else {
			for _, p := range deleted {
				delete(s.adverts, p)
			}
		}
	}
	return errors.Join(errs...)
}

// Status implements bgp.Speaker.
func (s *Speaker) Status(ctx context.Context) ([]bgp.PeerStatus, error) {
	s.mu.Lock()
	if s.state != running {
		s.mu.Unlock()
		return nil, ErrNotRunning
	}
	srv, names := s.server, make(map[netip.Addr]string, len(s.peers))
	bfd := map[netip.Addr]string{}
	for a, e := range s.peers {
		names[a] = e.peer.Name
		if e.peer.BFD != nil {
			bfd[a] = bgp.BFDDown
		}
	}
	limited := maps.Clone(s.limited)
	s.mu.Unlock()

	srv.ListBfdPeer(ctx, func(addr string, st *api.BfdPeerState) {
		if a, err := netip.ParseAddr(addr); err == nil && bfd[a] != "" {
			bfd[a] = bfdState(st.GetSessionState())
		}
	})
	var out []bgp.PeerStatus
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		st := bgp.PeerStatus{Name: names[addr], Address: addr, ASN: p.GetConf().GetPeerAsn(), State: sessionState(p.GetState()), BFD: bfd[addr], Flaps: s.mon.flaps.of(addr)}
		if limited[addr] {
			st.State = bgp.StatePrefixLimit
		}
		if st.State != bgp.StateEstablished {
			out = append(out, st)
			return
		}
		if up := p.GetTimers().GetState().GetUptime(); up != nil {
			st.Uptime = time.Since(up.AsTime()).Truncate(time.Second)
		}
		// GoBGP's "accepted" leaves out only what it rejects before import
		// policy (AS loop, originator ID); the monitor counts what import
		// policy rejects, as it is imported.
		var beforePolicy uint64
		for _, af := range p.GetAfiSafis() {
			st.Received += af.GetState().GetReceived()
			st.Advertised += af.GetState().GetAdvertised()
			beforePolicy += af.GetState().GetReceived() - min(af.GetState().GetAccepted(), af.GetState().GetReceived())
		}
		st.RejectedBy = s.mon.rejects.byReason(addr)
		if beforePolicy > 0 {
			if st.RejectedBy == nil {
				st.RejectedBy = map[string]uint64{}
			}
			st.RejectedBy[bgp.RejectLoop] += beforePolicy
		}
		st.Rejected = min(beforePolicy+s.mon.rejects.count(addr), st.Received)
		st.Accepted = st.Received - st.Rejected
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("list bgp peers: %w", err)
	}
	slices.SortFunc(out, func(a, b bgp.PeerStatus) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), a.Address.Compare(b.Address))
	})
	return out, nil
}

// purgeLimited takes a peer that GoBGP shut down for its prefix limit out of
// service for good, routes included. GoBGP itself sends the Cease but then
// sees the peer close the connection as a graceful restart and keeps the
// flood as stale routes for the restart time; deleting the peer drops them,
// and re-adding it administratively down keeps it visible in Status without
// reconnecting into the same flood. SetPeers with a changed limit brings it back.
func (s *Speaker) purgeLimited(addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.peers[addr]
	if s.state != running || !ok || s.limited[addr] {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The event may come late: SetPeers may have replaced the peer since
	// (a new limit), and the new session must be left alone.
	stillLimited := false
	err := s.server.ListPeer(ctx, &api.ListPeerRequest{Address: addr.String()}, func(p *api.Peer) {
		stillLimited = stillLimited || p.GetState().GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT
	})
	if err != nil || !stillLimited {
		return
	}
	s.log.Warn("bgp peer exceeded its prefix limit: session shut down and its routes dropped until its configuration changes",
		"peer", e.peer.Name, "address", addr, "max_prefixes", e.peer.MaxPrefixes)
	if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		s.log.Error("drop the routes of a peer over its prefix limit", "peer", e.peer.Name, "err", err)
		return
	}
	down := proto.Clone(e.conf).(*api.Peer)
	down.Conf.AdminDown = true
	if err := s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: down}); err != nil {
		s.log.Error("re-add a peer over its prefix limit, down", "peer", e.peer.Name, "err", err)
	}
	s.limited[addr] = true
}

// sessionState names GoBGP's session state the way PeerStatus does.
func sessionState(st *api.PeerState) string {
	if st.GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT {
		return bgp.StatePrefixLimit
	}
	switch st.GetSessionState() {
	case api.PeerState_SESSION_STATE_CONNECT:
		return bgp.StateConnect
	case api.PeerState_SESSION_STATE_ACTIVE:
		return bgp.StateActive
	case api.PeerState_SESSION_STATE_OPENSENT:
		return bgp.StateOpenSent
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return bgp.StateOpenConfirm
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return bgp.StateEstablished
	}
	return bgp.StateIdle
}

// bfdState names GoBGP's BFD session state the way PeerStatus does.
func bfdState(st api.BfdSessionState) string {
	switch st {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return bgp.BFDUp
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return bgp.BFDInit
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return bgp.BFDAdminDown
	}
	return bgp.BFDDown
}

// Watch implements bgp.Speaker.
func (s *Speaker) Watch(ctx context.Context, fn func([]bgp.Route)) {
	s.routes.Watch(ctx, fn)
}

// Converged implements bgp.Speaker.
func (s *Speaker) Converged() <-chan struct{} {
	return s.mon.converged
}
