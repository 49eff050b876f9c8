package agent

import (
	"context"
	"log/slog"
	"sync"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
)

// peerSet is the speaker's peers: the mesh's, derived from the registry's
// nodes, and the explicit ones (the config file's and the datastore's), each
// replaced as its watcher reports. Watchers report from their own
// goroutines; SetPeers calls never overlap.
type peerSet struct {
	speaker  bgp.Speaker
	self     mesh.Node
	template bgp.Peer // settings of every mesh session
	log      *slog.Logger

	mu       sync.Mutex // held across SetPeers
	nodes    []mesh.Node
	explicit []bgp.Peer
	// Nothing is set until both the mesh and the explicit peers are known:
	// graceful restart and convergence wait for the peers of the first call.
	haveNodes, haveExplicit bool
}

// newPeerSet returns the peers of self with explicit as the explicit ones;
// final says they never change, otherwise setExplicit must report them.
func newPeerSet(speaker bgp.Speaker, self mesh.Node, template bgp.Peer, explicit []bgp.Peer, final bool, log *slog.Logger) *peerSet {
	return &peerSet{speaker: speaker, self: self, template: template, explicit: explicit, haveExplicit: final, log: log}
}

// setNodes replaces the mesh's nodes and sets the speaker's peers.
func (s *peerSet) setNodes(ctx context.Context, nodes []mesh.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes, s.haveNodes = nodes, true
	s.apply(ctx)
}

// setExplicit replaces the explicit peers and sets the speaker's peers.
func (s *peerSet) setExplicit(ctx context.Context, peers []bgp.Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.explicit, s.haveExplicit = peers, true
	s.apply(ctx)
}

func (s *peerSet) apply(ctx context.Context) {
	if !s.haveNodes || !s.haveExplicit {
		return
	}
	meshPeers := mesh.Peers(s.self, s.nodes, s.template)
	if err := s.speaker.SetPeers(ctx, append(meshPeers, s.explicit...)); err != nil && ctx.Err() == nil {
		s.log.Error("set bgp peers", "err", err)
		return
	}
	s.log.Debug("bgp peers set", "mesh", len(meshPeers), "explicit", len(s.explicit))
}
