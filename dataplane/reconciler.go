package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/flatnet-io/flatnet/internal/hopset"
)

// ErrConflict is reported for a wanted route whose key (prefix and metric) a
// route the reconciler does not own already holds; that route is left alone.
var ErrConflict = errors.New("a route of another owner holds the prefix")

// kernel is what the reconciler needs from the routing table. The netlink
// implementation lives in kernel_linux.go; tests use a fake.
type kernel interface {
	// list returns every route of the main table, both families.
	list(ctx context.Context) ([]kernelRoute, error)
	// apply writes ops in batches and returns one error per op (nil: done;
	// deleting a route that is already gone is done).
	apply(ctx context.Context, ops []op) []error
	// subscribe reports others' changes to the main table to fn until ctx
	// ends; the effects of apply are not reported (the caller records them
	// from apply's results, in order). The channel yields why the
	// subscription broke; nothing is reported after.
	subscribe(ctx context.Context, fn func(routeEvent)) (<-chan error, error)
	// roundTrips counts the acknowledged batches sent so far.
	roundTrips() uint64
	// gateway returns the gateway of the kernel's route to addr when that
	// route is not ours and goes through one (addr is not on a link of
	// this node); otherwise addr.
	gateway(addr netip.Addr) netip.Addr
	close() error
}

// settings are the reconciler's timings; zero values take the defaults.
type settings struct {
	debounce time.Duration // how long changes are coalesced before a write
	resync   time.Duration // how often the kernel is read in full
	retry    time.Duration // first retry after a failed write, doubling up to resync
	onPass   func(Pass)    // nil: none
}

func (s settings) withDefaults() settings {
	if s.debounce <= 0 {
		s.debounce = 5 * time.Millisecond
	}
	if s.resync <= 0 {
		s.resync = time.Minute
	}
	if s.retry <= 0 {
		s.retry = time.Second
	}
	s.retry = min(s.retry, s.resync)
	return s
}

// Reconciler keeps the kernel's flatnet routes equal to the desired ones.
// Its setters may be called from any goroutine at any time; only Run's
// goroutine writes the kernel.
type Reconciler struct {
	k    kernel
	log  *slog.Logger
	set  settings
	kick chan struct{}   // something is dirty
	sync chan chan error // Sync requests, served by Run

	mu      sync.Mutex
	want    desired
	view    view
	dirty   map[routeKey]struct{} // keys to look at in the next pass
	full    bool                  // the next pass looks at every key
	reading bool                  // a resync is reading the kernel: events wait in held
	held    []routeEvent
	stats   stats
	hops    hopset.Cache // Upsert's
	// drifted are the keys where the kernel changed a route of ours under
	// us (route events, or a resync that read something else than the view
	// held); a write there is a drift repair.
	drifted map[routeKey]struct{}
	listed  bool // the kernel has been read once: later differences are drift
}

type stats struct {
	failures  uint64
	repairs   uint64 // writes that put back a route of ours someone changed
	netlink   uint64 // failed netlink requests: route writes, dumps, subscriptions
	lastErr   error
	lastErrAt time.Time
}

// Pass describes one reconcile pass, for metrics.
type Pass struct {
	// Full: every key was looked at (a resync, or after an underlay
	// change), not only the changed ones.
	Full bool
	// Duration is planning and writing, and for a resync reading the
	// kernel first.
	Duration time.Duration
	Writes   int // route messages written, failed ones included
	Failed   int // writes the kernel refused, and conflicts
}

func newReconciler(k kernel, log *slog.Logger, s settings) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{
		k:       k,
		log:     log,
		set:     s.withDefaults(),
		kick:    make(chan struct{}, 1),
		sync:    make(chan chan error),
		want:    newDesired(),
		view:    newView(nil),
		dirty:   map[routeKey]struct{}{},
		drifted: map[routeKey]struct{}{},
	}
}

// Upsert wants a route to prefix over nextHops (several make an ECMP route),
// replacing what was wanted there.
func (r *Reconciler) Upsert(prefix netip.Prefix, nextHops []netip.Addr) error {
	p, err := validPrefix(prefix)
	if err != nil {
		return err
	}
	nh, err := validNextHops(p, nextHops)
	if err != nil {
		return err
	}
	r.mu.Lock()
	hops := r.hops.Make(nh)
	if old, ok := r.want.routes[p]; !ok || old != hops {
		r.want.routes[p] = hops
		r.dirty[keyOf(p)] = struct{}{}
	}
	r.mu.Unlock()
	r.poke()
	return nil
}

// Delete withdraws the learned route to prefix. Before MarkConverged too, a
// route of ours at prefix goes: the caller has spoken about it.
func (r *Reconciler) Delete(prefix netip.Prefix) {
	p, err := validPrefix(prefix)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.want.name(p)
	delete(r.want.routes, p)
	r.dirty[keyOf(p)] = struct{}{}
	r.mu.Unlock()
	r.poke()
}

// setRoutes replaces every learned route with routes (prefix → next hops).
// Invalid entries are left out and reported; the rest take effect. The
// tests' way to want many routes at once; callers Upsert.
func (r *Reconciler) setRoutes(routes map[netip.Prefix][]netip.Addr) error {
	next := make(map[netip.Prefix]hopset.Set, len(routes))
	var errs []error
	for prefix, nextHops := range routes {
		p, err := validPrefix(prefix)
		var nh []netip.Addr
		if err == nil {
			nh, err = validNextHops(p, nextHops)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[p] = hopset.Make(nh)
	}
	r.mu.Lock()
	for p := range r.want.routes {
		if _, ok := next[p]; !ok {
			r.want.name(p)
			r.dirty[keyOf(p)] = struct{}{}
		}
	}
	for p, nh := range next {
		if old, ok := r.want.routes[p]; !ok || old != nh {
			r.dirty[keyOf(p)] = struct{}{}
		}
	}
	r.want.routes = next
	r.mu.Unlock()
	r.poke()
	return errors.Join(errs...)
}

// SetBlackholes replaces the set of blackholed prefixes: this node's blocks.
// Invalid prefixes are left out and reported; the rest take effect.
func (r *Reconciler) SetBlackholes(prefixes []netip.Prefix) error {
	next := make(map[netip.Prefix]struct{}, len(prefixes))
	var errs []error
	for _, prefix := range prefixes {
		p, err := validPrefix(prefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[p] = struct{}{}
	}
	r.mu.Lock()
	for p := range r.want.blackholes {
		if _, ok := next[p]; !ok {
			r.want.name(p)
			r.dirty[keyOf(p)] = struct{}{}
		}
	}
	for p := range next {
		if _, ok := r.want.blackholes[p]; !ok {
			r.dirty[keyOf(p)] = struct{}{}
		}
	}
	r.want.blackholes = next
	r.mu.Unlock()
	r.poke()
	return errors.Join(errs...)
}

// MarkConverged lets stale routes go: routes of ours that the kernel had and
// nobody has wanted since start. Call it on BGP End-of-RIB or after a timeout.
func (r *Reconciler) MarkConverged() {
	r.mu.Lock()
	r.want.markConverged()
	r.full = true
	r.mu.Unlock()
	r.poke()
}

// flush makes Run write what is wanted now, without waiting for the
// debounce, and returns the errors of that pass: the tests' way to know a
// pass is done. It needs Run to be running.
func (r *Reconciler) flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case r.sync <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close releases the netlink sockets. It leaves every route in place. Call it
// after Run has returned.
func (r *Reconciler) Close() error { return r.k.close() }

func (r *Reconciler) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run subscribes to route events, reads the kernel, and then writes every
// change until ctx ends, when it returns nil. Only one Run may be active.
func (r *Reconciler) Run(ctx context.Context) error {
	broken, err := r.k.subscribe(ctx, r.observe)
	if err != nil {
		return fmt.Errorf("subscribe to route events: %w", err)
	}
	retry := r.set.retry
	// after says when to read the kernel again, backing off while passes fail.
	after := func(err error) time.Duration {
		if err == nil {
			retry = r.set.retry
			return r.set.resync
		}
		d := retry
		retry = min(2*retry, r.set.resync)
		return d
	}
	resync := time.NewTimer(after(r.resync(ctx)))
	defer resync.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
			if !armed {
				debounce.Reset(r.set.debounce)
				armed = true
			}
		case <-debounce.C:
			armed = false
			if err := r.reconcile(ctx, false); err != nil {
				resync.Reset(after(err))
			}
		case reply := <-r.sync:
			err := r.reconcile(ctx, true)
			reply <- err
			if err != nil {
				resync.Reset(after(err))
			}
		case err := <-broken:
			r.log.Warn("route event subscription broke; reading the kernel again", "err", err)
			broken = nil
			resync.Reset(0)
		case <-resync.C:
			if broken == nil {
				if broken, err = r.k.subscribe(ctx, r.observe); err != nil {
					r.mu.Lock()
					r.stats.netlink++
					r.mu.Unlock()
					r.failed(fmt.Errorf("subscribe to route events: %w", err))
					resync.Reset(after(err))
					continue
				}
			}
			resync.Reset(after(r.resync(ctx)))
		}
	}
}

// observe takes a route event from the subscription.
func (r *Reconciler) observe(ev routeEvent) {
	r.mu.Lock()
	if r.reading {
		r.held = append(r.held, ev)
	} else {
		r.view.apply(ev)
		r.dirty[ev.route.key] = struct{}{}
		if ev.route.owned() {
			r.drifted[ev.route.key] = struct{}{}
		}
		if !ev.route.owned() && len(ev.route.nextHops) > 0 {
			// An underlay route changed: next hops may resolve elsewhere.
			r.full = true
		}
	}
	r.mu.Unlock()
	r.poke()
}

// resync reads the whole main table and then writes every difference.
// Events that arrive while it reads are applied on top, in order.
func (r *Reconciler) resync(ctx context.Context) error {
	start := time.Now()
	r.mu.Lock()
	r.reading, r.held = true, nil
	r.mu.Unlock()
	routes, err := r.k.list(ctx)
	r.mu.Lock()
	if err == nil {
		old := r.view
		r.view = newView(routes)
		for _, ev := range r.held {
			r.view.apply(ev)
		}
		if r.listed {
			r.noteDrift(&old)
		}
		r.listed = true
	} else {
		for _, ev := range r.held {
			r.view.apply(ev)
		}
		r.stats.netlink++
	}
	r.reading, r.held, r.full = false, nil, true
	r.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("list routes: %w", err)
		r.failed(err)
		return err
	}
	err = r.pass(ctx, true, start)
	r.mu.Lock()
	stale := r.countStale()
	r.mu.Unlock()
	if stale > 0 {
		r.log.Info("keeping stale routes until converged", "routes", stale)
	}
	return err
}

// noteDrift marks the keys where the view just read differs from old, what
// the reconciler believed the kernel held. Call with mu held.
func (r *Reconciler) noteDrift(old *view) {
	for k, was := range old.ours {
		if now, ok := r.view.ours[k]; !ok || now != was {
			r.drifted[k] = struct{}{}
		}
	}
	for k := range r.view.ours {
		if _, ok := old.ours[k]; !ok {
			r.drifted[k] = struct{}{}
		}
	}
}

// reconcile writes the difference at the dirty keys, or at all keys.
func (r *Reconciler) reconcile(ctx context.Context, all bool) error {
	return r.pass(ctx, all, time.Now())
}

// pass is reconcile, timed from start.
func (r *Reconciler) pass(ctx context.Context, all bool, start time.Time) error {
	r.mu.Lock()
	keys := r.dirty
	whole := all || r.full
	if whole {
		keys = allKeys(&r.want, &r.view)
	}
	r.dirty, r.full = map[routeKey]struct{}{}, false
	resolved := map[netip.Addr]netip.Addr{} // one lookup per next hop and pass
	resolve := func(a netip.Addr) netip.Addr {
		g, ok := resolved[a]
		if !ok {
			g = r.k.gateway(a)
			resolved[a] = g
		}
		return g
	}
	ops, conflicts := plan(keys, &r.want, &r.view, resolve)
	r.mu.Unlock()

	var errs []error // of *opError
	for _, k := range conflicts {
		errs = append(errs, &opError{op: opAdd, key: k, err: ErrConflict})
	}
	if len(ops) > 0 {
		results := r.k.apply(ctx, ops)
		// The kernel has what the acks say; events bring only others' changes.
		r.mu.Lock()
		for i, o := range ops {
			if results[i] != nil {
				errs = append(errs, &opError{op: o.kind, key: o.key, err: results[i]})
				r.stats.netlink++
				continue
			}
			r.view.done(o)
			if _, ok := r.drifted[o.key]; ok {
				r.stats.repairs++
			}
		}
		r.mu.Unlock()
		r.log.Debug("routes written", "writes", len(ops), "failed", len(errs)-len(conflicts))
	}
	r.mu.Lock()
	if whole {
		clear(r.drifted)
	} else {
		for k := range keys {
			delete(r.drifted, k)
		}
	}
	r.mu.Unlock()
	if r.set.onPass != nil {
		r.set.onPass(Pass{Full: whole, Duration: time.Since(start), Writes: len(ops), Failed: len(errs)})
	}
	if len(errs) == 0 {
		if whole { // every route is as wanted: earlier failures are gone
			r.mu.Lock()
			r.stats.lastErr, r.stats.lastErrAt = nil, time.Time{}
			r.mu.Unlock()
		}
		return nil
	}
	if ctx.Err() != nil { // shutting down: the next run resyncs
		return ctx.Err()
	}
	err := summarize(errs)
	r.failed(err)
	for _, e := range errs {
		var oe *opError
		if errors.As(e, &oe) {
			r.log.Debug("route not written", "prefix", oe.key.prefix, "err", e)
		}
	}
	return err
}

// countStale counts our routes that nobody wants but that stay until
// converged. Call with mu held.
func (r *Reconciler) countStale() int {
	if r.want.converged {
		return 0
	}
	n := 0
	for k := range r.view.ours {
		_, wanted := r.want.target(k.prefix, nil)
		if (!wanted || k.metric != defaultMetric(k.prefix)) && !r.want.mayRemove(k.prefix) {
			n++
		}
	}
	return n
}

func (r *Reconciler) failed(err error) {
	r.log.Warn("route reconcile incomplete; will retry", "err", err)
	r.mu.Lock()
	r.stats.failures++
	r.stats.lastErr, r.stats.lastErrAt = err, time.Now()
	r.mu.Unlock()
}

// summarize joins the first few errors of a pass and counts the rest.
func summarize(errs []error) error {
	const shown = 5
	if len(errs) <= shown {
		return errors.Join(errs...)
	}
	return errors.Join(append(errs[:shown:shown], fmt.Errorf("and %d more route errors", len(errs)-shown))...)
}
