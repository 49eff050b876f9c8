package ipam

import (
	"context"
	"errors"
	"maps"
	"slices"
)

// A release must not be lost because the store cannot take it now: on a
// full disk every release fails, since it rewrites its block, and a CNI DEL
// that fails may never be retried once its pod is gone. So a release that
// fails for any reason but the caller's context is recorded, reported done,
// and written by RetryReleases, which the agent calls periodically. Until
// then the addresses stay allocated, never handed to anyone else. The
// record lives in memory: an agent restarted before the store took the
// write leaves the addresses to the garbage collectors (the runtime's CNI
// GC; with Kubernetes, the collector of pods that are gone).

// deferRelease records that handle's release failed with err.
func (a *Allocator) deferRelease(handle string, err error) {
	if a.pending == nil {
		a.pending = map[string]bool{}
	}
	if !a.pending[handle] {
		a.log.Warn("release deferred: the datastore did not take it; retrying until it does", "handle", handle, "err", err)
	}
	a.pending[handle] = true
}

// RetryReleases writes the releases that failed before and returns the
// errors of those that fail again; they stay recorded.
func (a *Allocator) RetryReleases(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, h := range slices.Sorted(maps.Keys(a.pending)) {
		gone, err := a.release(ctx, a.holds(h))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		delete(a.pending, h)
		a.log.Info("deferred release done", "handle", h, "released", len(gone))
	}
	return errors.Join(errs...)
}

// PendingReleases returns the handles whose release is yet to be written.
func (a *Allocator) PendingReleases() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.pending))
}
