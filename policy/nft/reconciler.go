package nft

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flatnet-io/flatnet/policy"
	"sigs.k8s.io/knftables"
)

// settings are the reconciler's timings; zero values take the defaults.
type settings struct {
	debounce time.Duration // how long changes are coalesced before a write
	resync   time.Duration // how often the kernel is read in full
	retry    time.Duration // first retry after a failed write, doubling up to resync
}

func (s settings) withDefaults() settings {
	if s.debounce <= 0 {
		s.debounce = 2 * time.Millisecond
	}
	if s.resync <= 0 {
		s.resync = 10 * time.Second
	}
	if s.retry <= 0 {
		s.retry = 500 * time.Millisecond
	}
	s.retry = min(s.retry, s.resync)
	return s
}

// Reconciler keeps the table flatnet-policy equal to the rendering of the
// last Ruleset it was given. Set may be called from any goroutine; only
// Run's goroutine runs nft.
type Reconciler struct {
	nft  knftables.Interface
	log  *slog.Logger
	set  settings
	kick chan struct{}
	sync chan syncRequest

	mu    sync.Mutex
	want  *table // nil until the first Set
	gen   uint64 // counts Set calls
	stats Stats
	// Run's own: the table as the kernel has it after the last good pass;
	// nil when it must be read.
	view *table
}

// Stats count the reconciler's work, for status and tests.
type Stats struct {
	Passes       uint64    // passes that found or wrote anything (writes included)
	Transactions uint64    // nft transactions run
	Operations   uint64    // nft operations in them
	Reads        uint64    // full reads of the table
	Repairs      uint64    // writes that undid others' changes (drift)
	Failures     uint64    // failed passes
	LastErr      error     // of the last failed pass
	LastErrAt    time.Time //
	Applied      uint64    // the Set generation the kernel has
}

func newReconciler(nft knftables.Interface, log *slog.Logger, s settings) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{
		nft:  nft,
		log:  log,
		set:  s.withDefaults(),
		kick: make(chan struct{}, 1),
		sync: make(chan syncRequest),
	}
}

// Set makes rs the policy to enforce. Until the first Set, Run writes
// nothing: the table an earlier run left stays as it is, so call Set only
// with a complete Ruleset (informers synced, every local pod known), or an
// agent restarting would open its pods until it knows better.
func (r *Reconciler) Set(rs policy.Ruleset) {
	t := render(rs)
	r.mu.Lock()
	r.want = t
	r.gen++
	r.mu.Unlock()
	r.poke()
}

// Stats returns the reconciler's counters.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Sync makes Run write what is wanted now, without waiting for the debounce,
// and returns the error of that pass: when it returns nil, the kernel
// enforces the last Ruleset given to Set. It needs Run to be running.
func (r *Reconciler) Sync(ctx context.Context) error { return r.request(ctx, false) }

// Resync is Sync after reading the table again: it repairs drift now.
func (r *Reconciler) Resync(ctx context.Context) error { return r.request(ctx, true) }

type syncRequest struct {
	read  bool
	reply chan error
}

func (r *Reconciler) request(ctx context.Context, read bool) error {
	req := syncRequest{read: read, reply: make(chan error, 1)}
	select {
	case r.sync <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Reconciler) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reads the table and writes what differs, then every change, and
// reads and repairs the table every resync, until ctx ends; it then returns
// nil, leaving the table as it is. Only one Run may be active.
func (r *Reconciler) Run(ctx context.Context) error {
	retry := r.set.retry
	after := func(err error) time.Duration {
		if err == nil {
			retry = r.set.retry
			return r.set.resync
		}
		d := retry
		retry = min(2*retry, r.set.resync)
		return d
	}
	r.view = nil
	resync := time.NewTimer(after(r.pass(ctx)))
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
			if err := r.pass(ctx); err != nil {
				resync.Reset(after(err))
			}
		case req := <-r.sync:
			if req.read {
				r.view = nil
			}
			err := r.pass(ctx)
			req.reply <- err
			if err != nil {
				resync.Reset(after(err))
			}
		case <-resync.C:
			r.view = nil
			resync.Reset(after(r.pass(ctx)))
		}
	}
}

// pass writes the difference between the wanted table and the view,
// reading the kernel first when the view is unknown. A failed write makes
// it read the kernel and try once more.
func (r *Reconciler) pass(ctx context.Context) error {
	r.mu.Lock()
	want, gen := r.want, r.gen
	r.mu.Unlock()
	if want == nil {
		return nil // nothing to enforce yet: leave the kernel alone
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		fresh := r.view == nil
		if fresh {
			if r.view, err = read(ctx, r.nft); err != nil {
				r.view = nil
				break
			}
			r.count(func(s *Stats) { s.Reads++ })
		}
		// Drift: the kernel, read again, differs from what was written.
		r.mu.Lock()
		drift := fresh && r.stats.Transactions > 0 && r.stats.Applied == gen
		r.mu.Unlock()
		tx := r.nft.NewTransaction()
		n := plan(tx, want, r.view)
		if n == 0 {
			r.count(func(s *Stats) { s.Applied = gen })
			return nil
		}
		if err = r.nft.Run(ctx, tx); err == nil {
			r.view = want.clone()
			r.count(func(s *Stats) {
				s.Passes++
				s.Transactions++
				s.Operations += uint64(n)
				s.Applied = gen
				if drift {
					s.Repairs++
				}
			})
			if drift {
				r.log.Info("policy table repaired", "operations", n)
			} else {
				r.log.Debug("policy table written", "operations", n)
			}
			return nil
		}
		err = fmt.Errorf("nft transaction of %d operations: %w", n, err)
		r.view = nil
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.log.Warn("policy reconcile failed; will retry", "err", err)
	r.count(func(s *Stats) {
		s.Failures++
		s.LastErr, s.LastErrAt = err, time.Now()
	})
	return err
}

func (r *Reconciler) count(f func(*Stats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}
