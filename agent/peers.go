package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
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

// explicitPeers returns node's explicit peers: conf, the config file's
// (valid already), then the peer of each BGPPeer object in objs that applies
// to node, in name order. An object whose selector or peer is malformed, or
// whose peer is not valid beside those before it (c's rules, and names and
// addresses unique), is left out; dropped says why, by object name.
func explicitPeers(c bgp.Config, conf []bgp.Peer, objs []*v1alpha1.BGPPeer, node string, labels map[string]string,
	secret func(key string) (string, error),
) (peers []bgp.Peer, dropped map[string]error) {
	peers, dropped = slices.Clone(conf), map[string]error{}
	objs = slices.SortedFunc(slices.Values(objs), func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	for _, o := range objs {
		p, applies, err := objectPeer(c, peers, o, node, labels, secret)
		switch {
		case err != nil:
			dropped[o.Name] = err
		case applies:
			peers = append(peers, p)
		}
	}
	return peers, dropped
}

// objectPeer returns o's peer, if o applies to node, checked beside the
// peers before it.
func objectPeer(c bgp.Config, before []bgp.Peer, o *v1alpha1.BGPPeer, node string, labels map[string]string,
	secret func(key string) (string, error),
) (p bgp.Peer, applies bool, err error) {
	if applies, err = o.AppliesTo(node, labels); err != nil || !applies {
		return p, applies, err
	}
	if p, err = o.Peer(secret); err != nil {
		return p, true, err
	}
	if i := slices.IndexFunc(before, func(q bgp.Peer) bool { return q.Address == p.Address }); i >= 0 {
		return p, true, fmt.Errorf("bgppeer %s: address %v is already peer %s's", o.Name, p.Address, before[i].Name)
	}
	if err := bgp.ValidatePeers(c, append(slices.Clip(before), p)); err != nil {
		return p, true, fmt.Errorf("bgppeer %s: %w", o.Name, err)
	}
	return p, true, nil
}

// secretFile returns a reader of the keys of a Secret mounted at dir: a key's
// value is its file's content, less one trailing newline.
func secretFile(dir string) func(key string) (string, error) {
	return func(key string) (string, error) {
		// A Secret's keys are file names; anything else ("..", "a/b") would
		// read outside the Secret.
		if errs := validation.IsConfigMapKey(key); len(errs) > 0 {
			return "", fmt.Errorf("not a Secret key: %s", strings.Join(errs, "; "))
		}
		path := filepath.Join(dir, key)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no file %s: is it a key of the Secret flatnet-bgp-passwords?", path)
		}
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(string(b), "\n"), nil
	}
}
