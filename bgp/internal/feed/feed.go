// Package feed keeps a speaker's learned routes and hands their changes to
// watchers, each on its own goroutine, so that a slow watcher delays nobody.
// It implements bgp.Speaker's Watch for every Speaker in this module.
//
// It knows nothing of BGP: it stores bgp.Route values and compares them.
package feed

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/internal/hopset"
)

// Feed is the table of learned routes. The zero value is not usable; call
// New.
type Feed struct {
	mu       sync.Mutex
	routes   map[netip.Prefix]hopset.Set
	hops     hopset.Cache
	watchers map[*watcher]struct{}
}

// New returns an empty feed.
func New() *Feed {
	return &Feed{
		routes:   map[netip.Prefix]hopset.Set{},
		watchers: map[*watcher]struct{}{},
	}
}

// Publish applies changes to the table: a route with next hops replaces the
// prefix's, one without removes it. It passes on to every watcher the
// changes that change something.
func (f *Feed) Publish(changes []bgp.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]bgp.Route, 0, len(changes))
	for _, r := range changes {
		old, had := f.routes[r.Prefix]
		switch {
		case len(r.NextHops) == 0 && had:
			delete(f.routes, r.Prefix)
		case len(r.NextHops) > 0:
			hops := f.hops.Make(r.NextHops)
			if had && old == hops {
				continue
			}
			f.routes[r.Prefix] = hops
		default:
			continue
		}
		out = append(out, bgp.Route{Prefix: r.Prefix, NextHops: slices.Clone(r.NextHops)})
	}
	if len(out) == 0 {
		return
	}
	for w := range f.watchers {
		w.push(item{routes: out})
	}
}

// Routes returns every route in the table, sorted by prefix
// (netip.Prefix.Compare).
func (f *Feed) Routes() []bgp.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshot()
}

func (f *Feed) snapshot() []bgp.Route {
	out := make([]bgp.Route, 0, len(f.routes))
	for p, nh := range f.routes {
		out = append(out, bgp.Route{Prefix: p, NextHops: nh.Addrs()})
	}
	slices.SortFunc(out, func(a, b bgp.Route) int { return a.Prefix.Compare(b.Prefix) })
	return out
}

// Watch calls fn with the current routes, if there are any, then with each
// change, until ctx is done. It returns at once.
func (f *Feed) Watch(ctx context.Context, fn func([]bgp.Route)) {
	w := &watcher{fn: fn, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	if routes := f.snapshot(); len(routes) > 0 {
		w.push(item{routes: routes})
	}
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	go func() {
		w.run(ctx)
		f.mu.Lock()
		delete(f.watchers, w)
		f.mu.Unlock()
		w.release()
	}()
}

// Barrier calls done, on a goroutine of its own, once every current watcher
// has returned from its calls for every change published before Barrier.
func (f *Feed) Barrier(done func()) {
	var wg sync.WaitGroup
	f.mu.Lock()
	for w := range f.watchers {
		wg.Add(1)
		w.push(item{barrier: &wg})
	}
	f.mu.Unlock()
	go func() {
		wg.Wait()
		done()
	}()
}

// item is a batch of changes or a barrier marker.
type item struct {
	routes  []bgp.Route
	barrier *sync.WaitGroup
}

type watcher struct {
	fn   func([]bgp.Route)
	wake chan struct{}

	mu      sync.Mutex
	queue   []item
	stopped bool
}

func (w *watcher) push(it item) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		if it.barrier != nil {
			it.barrier.Done()
		}
		return
	}
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run delivers the queue until ctx is done. Batches queued together are
// merged into one call, a later change of a prefix replacing an earlier one;
// a barrier is released after the batches before it were delivered.
func (w *watcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		w.mu.Lock()
		queue := w.queue
		w.queue = nil
		w.mu.Unlock()
		var batch []bgp.Route
		for _, it := range queue {
			if it.barrier != nil {
				w.deliver(batch)
				batch = nil
				it.barrier.Done()
				continue
			}
			batch = merge(batch, it.routes)
		}
		w.deliver(batch)
	}
}

// deliver calls fn with a copy of batch, which watchers share.
func (w *watcher) deliver(batch []bgp.Route) {
	if len(batch) == 0 {
		return
	}
	own := make([]bgp.Route, len(batch))
	for i, r := range batch {
		own[i] = bgp.Route{Prefix: r.Prefix, NextHops: slices.Clone(r.NextHops)}
	}
	w.fn(own)
}

// release stops w and releases the barriers still queued.
func (w *watcher) release() {
	w.mu.Lock()
	w.stopped = true
	queue := w.queue
	w.queue = nil
	w.mu.Unlock()
	for _, it := range queue {
		if it.barrier != nil {
			it.barrier.Done()
		}
	}
}

// merge appends next to batch; a prefix that is already in batch is replaced
// where it stands. It never writes to next, which other watchers share.
func merge(batch, next []bgp.Route) []bgp.Route {
	if len(batch) == 0 {
		return slices.Clone(next)
	}
	at := make(map[netip.Prefix]int, len(batch))
	for i, r := range batch {
		at[r.Prefix] = i
	}
	for _, r := range next {
		if i, ok := at[r.Prefix]; ok {
			batch[i] = r
			continue
		}
		at[r.Prefix] = len(batch)
		batch = append(batch, r)
	}
	return batch
}
