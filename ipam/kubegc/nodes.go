package kubegc

import (
	"context"
	"fmt"
	"time"

	"github.com/flatnet-io/flatnet/ipam"
)

// A dead node's block is reclaimed by whichever agent gets there first; the
// others lose the compare-and-swap and find nothing left to do.
//
// Its allocations that belong to the dead node (or to any node that no longer
// exists) are dropped: a pod is bound to its node for life, and Kubernetes
// deletes the pods of a deleted Node, so nothing can still use them.
// Allocations that live nodes borrowed stay: the block then loses its
// affinity and lives on until they are released, when it is deleted like any
// empty block nobody owns. A block left with nothing is deleted at once.

// collectNodeBlock reclaims b if its node has been missing for the grace
// period and the API server confirms it is gone.
func (c *Collector) collectNodeBlock(ctx context.Context, key string, b ipam.Block, now time.Time) (reclaimed, orphaned bool, err error) {
	exists, err := c.look.CachedNode(ctx, b.Affinity)
	if err != nil {
		return false, false, fmt.Errorf("look up node %s: %w", b.Affinity, err)
	}
	if exists {
		delete(c.missing, key)
		return false, false, nil
	}
	if !c.missingFor(key, now) {
		return false, false, nil
	}
	if exists, err = c.look.LiveNode(ctx, b.Affinity); err != nil {
		return false, false, fmt.Errorf("look up node %s: %w", b.Affinity, err)
	}
	if exists {
		delete(c.missing, key)
		return false, false, nil
	}

	live := map[string]bool{}
	var keep []ipam.Allocation
	for _, a := range b.Allocations {
		ok, known := live[a.Attrs.Node]
		if !known {
			if ok, err = c.nodeExists(ctx, a.Attrs.Node); err != nil {
				return false, false, err
			}
			live[a.Attrs.Node] = ok
		}
		if ok {
			keep = append(keep, a)
		}
	}
	log := c.log.With("block", b.CIDR, "deadNode", b.Affinity)
	dropped := len(b.Allocations) - len(keep)
	if len(keep) == 0 {
		if err := c.store.DeleteBlock(ctx, b); ipam.LostRace(err) {
			return false, false, nil
		} else if err != nil {
			return false, false, fmt.Errorf("reclaim block %s of node %s: %w", b.CIDR, b.Affinity, err)
		}
		log.Info("reclaimed block of a deleted node", "released", dropped)
		return true, false, nil
	}
	dead := b.Affinity
	b.Allocations = keep
	b.Affinity = ""
	if _, err := c.store.UpdateBlock(ctx, b); ipam.LostRace(err) {
		return false, false, nil
	} else if err != nil {
		return false, false, fmt.Errorf("orphan block %s of node %s: %w", b.CIDR, dead, err)
	}
	log.Info("released a deleted node's addresses; block kept for addresses other nodes borrowed", "released", dropped, "borrowed", len(keep))
	return false, true, nil
}

// nodeExists asks the informer, then, for a node it does not know, the API
// server.
func (c *Collector) nodeExists(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, nil
	}
	ok, err := c.look.CachedNode(ctx, name)
	if err == nil && !ok {
		ok, err = c.look.LiveNode(ctx, name)
	}
	if err != nil {
		return false, fmt.Errorf("look up node %s: %w", name, err)
	}
	return ok, nil
}

// collectOrphan deletes an empty block without affinity once it has been
// empty for the grace period; the allocator only deletes such a block when it
// has no grace of its own.
func (c *Collector) collectOrphan(ctx context.Context, b ipam.Block, now time.Time) error {
	deleted, err := ipam.ExpireEmpty(ctx, c.store, b, now, c.cfg.Grace)
	if err != nil {
		return fmt.Errorf("orphaned block: %w", err)
	}
	if deleted {
		c.log.Info("deleted empty block without owner", "block", b.CIDR)
	}
	return nil
}
