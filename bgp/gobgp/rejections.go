package gobgp

import (
	"log/slog"
	"net/netip"
	"sync"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
)

// rejections tracks, per peer, the prefixes it announces that we did not
// accept (import policy, AS path loop, our own originator ID), and logs each
// peer and prefix once for as long as the peer is configured.
type rejections struct {
	log *slog.Logger

	mu       sync.Mutex
	names    map[netip.Addr]string
	rejected map[netip.Addr]map[netip.Prefix]struct{}
	logged   map[netip.Addr]map[netip.Prefix]struct{}
}

func newRejections(log *slog.Logger) *rejections {
	return &rejections{
		log:      log,
		names:    map[netip.Addr]string{},
		rejected: map[netip.Addr]map[netip.Prefix]struct{}{},
		logged:   map[netip.Addr]map[netip.Prefix]struct{}{},
	}
}

// setPeers records the configured peers' names and forgets peers no longer
// configured.
func (r *rejections) setPeers(names map[netip.Addr]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = names
	for a := range r.rejected {
		if _, ok := names[a]; !ok {
			delete(r.rejected, a)
		}
	}
	for a := range r.logged {
		if _, ok := names[a]; !ok {
			delete(r.logged, a)
		}
	}
}

// reset records what GoBGP's tables say of peer: the paths it announces
// that our Loc-RIB did not take, by prefix. Its other prefixes are rejected
// no more.
func (r *rejections) reset(peer netip.Addr, rejected map[netip.Prefix]*apiutil.Path) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name, configured := r.names[peer]
	if len(rejected) == 0 || !configured {
		delete(r.rejected, peer)
		return
	}
	set := make(map[netip.Prefix]struct{}, len(rejected))
	for prefix, path := range rejected {
		set[prefix] = struct{}{}
		if add(r.logged, peer, prefix) {
			r.log.Warn("bgp route rejected", "peer", name, "address", peer, "prefix", prefix, "nexthop", nextHopOf(path))
		}
	}
	r.rejected[peer] = set
}

// count returns how many of peer's announcements are rejected.
func (r *rejections) count(peer netip.Addr) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return uint64(len(r.rejected[peer]))
}

// add adds prefix to peer's set in m and reports whether it was new.
func add(m map[netip.Addr]map[netip.Prefix]struct{}, peer netip.Addr, prefix netip.Prefix) bool {
	if m[peer] == nil {
		m[peer] = map[netip.Prefix]struct{}{}
	}
	if _, ok := m[peer][prefix]; ok {
		return false
	}
	m[peer][prefix] = struct{}{}
	return true
}
