package gobgp

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
)

// rejections tracks, per peer, the prefixes it announces that import policy
// rejects, as they are imported: GoBGP's pre-policy update events (and its
// Adj-RIB-In withdrawals) go through update, classified by the classifier
// that mirrors the installed policy. A policy change re-classifies a peer's
// whole Adj-RIB-In (begin, then end with what a walk of it found). Routes
// GoBGP rejects before policy (AS loop, originator ID) are counted by GoBGP
// and never reach it.
//
// It logs once per peer and cause: a warning for a cause that says the peer
// sends what it should not, an info line for our own routes coming back.
type rejections struct {
	log    *slog.Logger
	policy atomic.Pointer[classifier]

	mu       sync.Mutex
	names    map[netip.Addr]string
	rejected map[netip.Addr]map[netip.Prefix]cause
	// touched, for a peer being re-classified, holds the prefixes events
	// changed meanwhile: they know better than the walk.
	touched map[netip.Addr]map[netip.Prefix]struct{}
	logged  map[netip.Addr]map[cause]bool
}

func newRejections(log *slog.Logger) *rejections {
	return &rejections{
		log:      log,
		names:    map[netip.Addr]string{},
		rejected: map[netip.Addr]map[netip.Prefix]cause{},
		touched:  map[netip.Addr]map[netip.Prefix]struct{}{},
		logged:   map[netip.Addr]map[cause]bool{},
	}
}

// setPolicy makes c the classifier of what comes next.
func (r *rejections) setPolicy(c *classifier) { r.policy.Store(c) }

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

// update classifies what peers announced and withdrew: GoBGP's paths before
// import policy.
func (r *rejections) update(paths []*apiutil.Path) {
	c := r.policy.Load()
	if c == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range paths {
		prefix, ok := prefixOf(p)
		if !ok || !p.PeerAddress.IsValid() {
			continue
		}
		peer := p.PeerAddress
		if t := r.touched[peer]; t != nil {
			t[prefix] = struct{}{}
		}
		if p.Withdrawal {
			delete(r.rejected[peer], prefix)
			continue
		}
		r.set(peer, prefix, p, c.classify(prefix, p))
	}
}

// set records prefix from peer as rejected for why (or not: causeNone), and
// logs the first rejection of each cause.
func (r *rejections) set(peer netip.Addr, prefix netip.Prefix, p *apiutil.Path, why cause) {
	if why == causeNone || why == causeASLoop || why == causeOriginator {
		delete(r.rejected[peer], prefix)
		return
	}
	m := r.rejected[peer]
	if m == nil {
		m = map[netip.Prefix]cause{}
		r.rejected[peer] = m
	}
	m[prefix] = why
	r.logFirst(peer, prefix, p, why)
}

func (r *rejections) logFirst(peer netip.Addr, prefix netip.Prefix, p *apiutil.Path, why cause) {
	name, configured := r.names[peer]
	if !configured || r.logged[peer][why] {
		return
	}
	if r.logged[peer] == nil {
		r.logged[peer] = map[cause]bool{}
	}
	r.logged[peer][why] = true
	attrs := []any{"peer", name, "address", peer, "prefix", prefix, "nexthop", nextHopOf(p), "reason", why.String()}
	if why.expected() {
		r.log.Info("bgp peer sends our own routes back: ignored (expected; counted as rejected in status, not logged again)", attrs...)
		return
	}
	r.log.Warn("bgp route rejected (further rejections for this reason from this peer are counted in status, not logged)", attrs...)
}

// begin starts re-classifying peer: the events that come until end are
// remembered.
func (r *rejections) begin(peer netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.touched[peer] = map[netip.Prefix]struct{}{}
}

// end replaces peer's rejections with what c says of adjIn, a walk of its
// Adj-RIB-In made after begin (the path it announces for each prefix),
// except for the prefixes events changed since begin.
func (r *rejections) end(peer netip.Addr, c *classifier, adjIn map[netip.Prefix]*apiutil.Path) {
	r.mu.Lock()
	defer r.mu.Unlock()
	touched := r.touched[peer]
	delete(r.touched, peer)
	if _, ok := r.names[peer]; !ok {
		delete(r.rejected, peer)
		return
	}
	old := r.rejected[peer]
	r.rejected[peer] = nil
	for prefix, p := range adjIn {
		if _, ok := touched[prefix]; !ok {
			r.set(peer, prefix, p, c.classify(prefix, p))
		}
	}
	for prefix := range touched {
		if why, ok := old[prefix]; ok {
			if r.rejected[peer] == nil {
				r.rejected[peer] = map[netip.Prefix]cause{}
			}
			r.rejected[peer][prefix] = why
		}
	}
}

// count returns how many of peer's announcements import policy rejects.
func (r *rejections) count(peer netip.Addr) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return uint64(len(r.rejected[peer]))
}

// byReason returns how many of peer's announcements import policy rejects,
// per bgp.PeerStatus.RejectedBy key; nil when none.
func (r *rejections) byReason(peer netip.Addr) map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[string]uint64
	for _, why := range r.rejected[peer] {
		if out == nil {
			out = map[string]uint64{}
		}
		out[why.reason()]++
	}
	return out
}
