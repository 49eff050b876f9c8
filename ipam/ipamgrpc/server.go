// Package ipamgrpc serves an ipam.Allocator as the ipampb.IPAM gRPC service
// (clients dial it with agent/agentclient). It translates between wire
// messages and the allocator's types and maps errors to status codes; it holds no
// allocation logic of its own.
package ipamgrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// Gateways are the link-local addresses pods route through, per family.
type Gateways struct {
	IPv4, IPv6 netip.Addr
}

// Server implements ipampb.IPAMServer over an allocator.
type Server struct {
	ipampb.UnimplementedIPAMServer
	alloc *ipam.Allocator
	gw    Gateways
	log   *slog.Logger
}

var _ ipampb.IPAMServer = (*Server)(nil)

// NewServer returns the service for alloc.
func NewServer(alloc *ipam.Allocator, gw Gateways, log *slog.Logger) *Server {
	return &Server{alloc: alloc, gw: gw, log: log}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { ipampb.RegisterIPAMServer(g, s) }

// Allocate implements ipampb.IPAMServer.
func (s *Server) Allocate(ctx context.Context, req *ipampb.AllocateRequest) (*ipampb.AllocateResponse, error) {
	fams := make([]ipam.Family, 0, len(req.GetFamilies()))
	for _, f := range req.GetFamilies() {
		switch f {
		case ipampb.Family_FAMILY_IPV4:
			fams = append(fams, ipam.IPv4)
		case ipampb.Family_FAMILY_IPV6:
			fams = append(fams, ipam.IPv6)
		default:
			return nil, status.Errorf(codes.InvalidArgument, "allocate: unknown address family %v", f)
		}
	}
	got, err := s.alloc.Allocate(ctx, ipam.Request{
		Handle:   req.GetHandle(),
		Attrs:    ipam.Attrs{Namespace: req.GetAttrs().GetNamespace(), Pod: req.GetAttrs().GetPod()},
		Families: fams,
	})
	if err != nil {
		return nil, s.fail("allocate", req.GetHandle(), err)
	}
	resp := &ipampb.AllocateResponse{}
	for _, al := range got {
		a := &ipampb.Address{Address: netip.PrefixFrom(al.Addr, al.Addr.BitLen()).String(), Family: wireFamily(ipam.FamilyOf(al.Addr))}
		if al.Addr.Is4() {
			a.Gateway = s.gw.IPv4.String()
		} else {
			a.Gateway = s.gw.IPv6.String()
		}
		if at, ok := s.alloc.Placement(al.Addr); ok {
			a.Pool, a.Block = at.Pool, at.Block.String()
		}
		resp.Addresses = append(resp.Addresses, a)
	}
	s.log.Debug("allocated", "handle", req.GetHandle(), "pod", req.GetAttrs().GetNamespace()+"/"+req.GetAttrs().GetPod(), "addrs", resp.Addresses)
	return resp, nil
}

// Release implements ipampb.IPAMServer.
func (s *Server) Release(ctx context.Context, req *ipampb.ReleaseRequest) (*ipampb.ReleaseResponse, error) {
	gone, err := s.alloc.Release(ctx, req.GetHandle())
	if err != nil {
		return nil, s.fail("release", req.GetHandle(), err)
	}
	resp := &ipampb.ReleaseResponse{}
	for _, al := range gone {
		resp.Released = append(resp.Released, al.Addr.String())
	}
	s.log.Debug("released", "handle", req.GetHandle(), "addrs", resp.Released)
	return resp, nil
}

// GC implements ipampb.IPAMServer.
func (s *Server) GC(ctx context.Context, req *ipampb.GCRequest) (*ipampb.GCResponse, error) {
	for i, h := range req.GetValidHandles() {
		if h == "" {
			return nil, status.Errorf(codes.InvalidArgument, "gc: valid_handles[%d] is empty", i)
		}
	}
	gone, err := s.alloc.GC(ctx, req.GetValidHandles())
	if err != nil {
		return nil, s.fail("gc", "", err)
	}
	return &ipampb.GCResponse{Released: s.allocations(gone)}, nil
}

// Usage implements ipampb.IPAMServer.
func (s *Server) Usage(ctx context.Context, _ *ipampb.UsageRequest) (*ipampb.UsageResponse, error) {
	blocks, err := s.alloc.Blocks(ctx)
	if err != nil {
		return nil, s.fail("usage", "", err)
	}
	resp := &ipampb.UsageResponse{Node: s.alloc.Node(), StrictAffinity: s.alloc.StrictAffinity()}
	pools := s.alloc.Pools()
	for _, p := range pools {
		resp.Pools = append(resp.Pools, &ipampb.PoolUsage{
			Name: p.Name, Cidr: p.CIDR.String(), BlockSize: int32(p.BlockSize), BlockBits: int32(p.BlockBits()),
		})
	}
	for _, b := range blocks {
		u := &ipampb.BlockUsage{Cidr: b.CIDR.String(), Affinity: b.Affinity, Used: int32(len(b.Allocations)), Size: int32(b.Size())}
		if !b.EmptySince.IsZero() {
			u.EmptySince = timestamppb.New(b.EmptySince)
		}
		if at, ok := s.alloc.Placement(b.CIDR.Addr()); ok {
			i := slices.IndexFunc(pools, func(p ipam.Pool) bool { return p.Name == at.Pool })
			resp.Pools[i].Blocks = append(resp.Pools[i].Blocks, u)
		} else {
			resp.UnpooledBlocks = append(resp.UnpooledBlocks, u)
		}
	}
	for f, room := range s.alloc.Room(blocks) {
		if !room {
			resp.Exhausted = append(resp.Exhausted, wireFamily(f))
		}
	}
	slices.Sort(resp.Exhausted)
	return resp, nil
}

// List implements ipampb.IPAMServer.
func (s *Server) List(ctx context.Context, req *ipampb.ListRequest) (*ipampb.ListResponse, error) {
	blocks, err := s.alloc.Blocks(ctx)
	if err != nil {
		return nil, s.fail("list", "", err)
	}
	var all []ipam.Allocation
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if (req.GetNode() == "" || al.Attrs.Node == req.GetNode()) && (req.GetHandle() == "" || al.Handle == req.GetHandle()) {
				all = append(all, al)
			}
		}
	}
	return &ipampb.ListResponse{Allocations: s.allocations(all)}, nil
}

func (s *Server) allocations(als []ipam.Allocation) []*ipampb.Allocation {
	out := make([]*ipampb.Allocation, 0, len(als))
	for _, al := range als {
		a := &ipampb.Allocation{
			Address:   al.Addr.String(),
			Handle:    al.Handle,
			Attrs:     &ipampb.Attributes{Namespace: al.Attrs.Namespace, Pod: al.Attrs.Pod, Node: al.Attrs.Node},
			Allocated: timestamppb.New(al.Allocated),
		}
		if at, ok := s.alloc.Placement(al.Addr); ok {
			a.Block = at.Block.String()
		}
		out = append(out, a)
	}
	return out
}

func wireFamily(f ipam.Family) ipampb.Family {
	if f == ipam.IPv4 {
		return ipampb.Family_FAMILY_IPV4
	}
	return ipampb.Family_FAMILY_IPV6
}

// fail logs err and turns it into the status code a client can act on.
func (s *Server) fail(op, handle string, err error) error {
	code := codes.Unavailable // the datastore could not be read or written
	switch {
	case errors.Is(err, ipam.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ipam.ErrExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, ipam.ErrConflict):
		code = codes.Aborted
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	if code == codes.InvalidArgument {
		s.log.Debug(op+" rejected", "handle", handle, "err", err)
	} else {
		s.log.Warn(op+" failed", "handle", handle, "err", err)
	}
	return status.Error(code, fmt.Sprintf("%s: %v", op, err))
}
