package agent

import (
	"context"
	"net/netip"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/dataplane"
)

// statusServer answers `flatnetctl status`.
type statusServer struct {
	agentpb.UnimplementedAgentServer
	self     mesh.Node
	asn      uint32
	routerID netip.Addr
	speaker  bgp.Speaker             // nil when BGP is off
	counts   func() dataplane.Counts // nil when BGP is off
	adverts  *advertLog
}

// advertLog remembers what routing last announced.
type advertLog struct {
	mu      sync.Mutex
	adverts []bgp.Advert
}

func (l *advertLog) set(a []bgp.Advert) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.adverts = a
}

func (l *advertLog) get() []bgp.Advert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.adverts
}

func (s *statusServer) Status(ctx context.Context, _ *agentpb.StatusRequest) (*agentpb.StatusResponse, error) {
	resp := &agentpb.StatusResponse{Node: s.self.Name, BgpEnabled: s.speaker != nil}
	for _, a := range []netip.Addr{s.self.IPv4, s.self.IPv6} {
		if a.IsValid() {
			resp.Addresses = append(resp.Addresses, a.String())
		}
	}
	if s.speaker == nil {
		return resp, nil
	}
	resp.Asn, resp.RouterId = s.asn, s.routerID.String()
	peers, err := s.speaker.Status(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "bgp status: %v", err)
	}
	for _, p := range peers {
		resp.Peers = append(resp.Peers, &agentpb.Peer{
			Name: p.Name, Address: p.Address.String(), Asn: p.ASN, State: p.State, Bfd: p.BFD,
			UptimeSeconds: int64(p.Uptime.Seconds()),
			Received:      p.Received, Accepted: p.Accepted, Rejected: p.Rejected, Advertised: p.Advertised,
			Mesh: strings.HasPrefix(p.Name, mesh.PeerNamePrefix),
		})
	}
	for _, a := range s.adverts.get() {
		resp.Adverts = append(resp.Adverts, &agentpb.Advert{Prefix: a.Prefix.String(), NextHop: a.NextHop.String()})
	}
	c := s.counts()
	resp.Routes = &agentpb.Routes{
		Learned: int64(c.Routes), Ecmp: int64(c.ECMP), Blackholes: int64(c.Blackholes), Pending: int64(c.Pending),
		Conflicts: int64(c.Conflicts), Stale: int64(c.Stale), Converged: c.Converged, LastError: c.LastError,
	}
	if c.LastError != "" {
		resp.Routes.LastErrorAt = timestamppb.New(c.LastErrorAt)
	}
	return resp, nil
}
