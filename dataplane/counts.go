package dataplane

import (
	"net/netip"
	"time"

	"github.com/flatnet-io/flatnet/internal/hopset"
)

// Counts describes the reconciler's routes for `flatnetctl status`.
type Counts struct {
	Routes     int // learned routes of ours in the kernel
	ECMP       int // of those, routes with more than one next hop
	Blackholes int // blackhole routes of ours in the kernel
	Desired    int // prefixes wanted: learned routes and blackholes
	Pending    int // wanted prefixes the kernel does not have as wanted yet
	Conflicts  int // wanted prefixes held by a route of another owner
	Stale      int // routes of ours nobody wants, kept until MarkConverged
	Converged  bool
	RoundTrips uint64 // acknowledged netlink batches sent
	Failures   uint64 // passes that left something unwritten
	// Repairs counts the writes that put back a route of ours that someone
	// else changed or deleted in the kernel (drift repairs).
	Repairs uint64
	// NetlinkErrors counts the netlink requests that failed: route writes
	// the kernel refused, dumps, subscriptions.
	NetlinkErrors uint64
	// LastError is the latest of those failures, and LastErrorAt when it
	// happened; "" once a pass over every route has written them all.
	LastError   string
	LastErrorAt time.Time
}

// Counts reports the reconciler's routes as of its last pass.
func (r *Reconciler) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := Counts{
		Converged:     r.want.converged,
		RoundTrips:    r.k.roundTrips(),
		Failures:      r.stats.failures,
		Repairs:       r.stats.repairs,
		NetlinkErrors: r.stats.netlink,
		LastErrorAt:   r.stats.lastErrAt,
	}
	if r.stats.lastErr != nil {
		c.LastError = r.stats.lastErr.Error()
	}
	for _, kr := range r.view.ours {
		switch {
		case kr.blackhole:
			c.Blackholes++
		case kr.hops.Len() > 1:
			c.ECMP++
			fallthrough
		default:
			c.Routes++
		}
	}
	c.Stale = r.countStale()
	decoded := map[hopset.Set][]netip.Addr{}
	count := func(p netip.Prefix) {
		c.Desired++
		k := keyOf(p)
		if _, ok := r.view.foreign[k]; ok {
			c.Conflicts++
		}
		t, _ := r.want.target(p, decoded)
		if have, ok := r.view.ours[k]; !ok || !have.is(t) {
			c.Pending++
		}
	}
	for p := range r.want.blackholes {
		count(p)
	}
	for p := range r.want.routes {
		if _, ok := r.want.blackholes[p]; !ok {
			count(p)
		}
	}
	return c
}
