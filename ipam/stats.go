package ipam

import (
	"sync/atomic"
	"time"
)

// Stats are what an Allocator has counted since it was made, for metrics.
type Stats struct {
	// Conflicts counts the writes that lost a race: a block another writer
	// changed, deleted or claimed since it was read (compare-and-swap).
	Conflicts uint64
	// Retries counts the attempts operations made again after losing one.
	Retries uint64
	// GCReleased counts the addresses GC released.
	GCReleased uint64
	// BlocksReleased counts the empty blocks of this node given back to the
	// pool (at once without a grace period, or by ReleaseIdleBlocks).
	BlocksReleased uint64
}

// Operation names, as Config.Timed is told them.
const (
	OpAllocate = "allocate"
	OpRelease  = "release"
	OpGC       = "gc"
)

// stats are the counters behind Stats.
type stats struct {
	conflicts, retries, gcReleased, blocksReleased atomic.Uint64
}

// Stats returns the allocator's counts.
func (a *Allocator) Stats() Stats {
	return Stats{
		Conflicts:      a.stats.conflicts.Load(),
		Retries:        a.stats.retries.Load(),
		GCReleased:     a.stats.gcReleased.Load(),
		BlocksReleased: a.stats.blocksReleased.Load(),
	}
}

// timed tells Config.Timed how long op took since start; use it deferred.
func (a *Allocator) timed(op string, start time.Time) {
	if a.cfg.Timed != nil {
		a.cfg.Timed(op, time.Since(start))
	}
}
