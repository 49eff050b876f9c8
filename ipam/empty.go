package ipam

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// LostRace tells whether err only means that another writer got there first:
// the block changed or went since it was read. The caller reads again and
// decides again; it is not a failure.
func LostRace(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound)
}

// ExpireEmpty applies the rule for a block without allocations, whoever holds
// it: the first writer to find it empty but unmarked marks it (EmptySince =
// now); once it has stayed empty for grace, it is deleted. Between the two,
// an allocation into it clears the mark (see Block.insert). A lost race is
// not an error: whoever won changed the block, and the next look decides
// again. It reports whether it deleted the block.
func ExpireEmpty(ctx context.Context, s Store, b Block, now time.Time, grace time.Duration) (deleted bool, err error) {
	if len(b.Allocations) > 0 || !b.Damaged.IsZero() { // a damaged block may hold more than it lists
		return false, nil
	}
	if b.EmptySince.IsZero() { // emptied by a writer that did not mark it
		b.EmptySince = now.UTC()
		if _, err := s.UpdateBlock(ctx, b); err != nil && !LostRace(err) {
			return false, fmt.Errorf("mark block %s empty: %w", b.CIDR, err)
		}
		return false, nil
	}
	if now.Sub(b.EmptySince) < grace {
		return false, nil
	}
	// Someone may have allocated from it since it was read: then the revision
	// moved on, the delete fails, and the block stays.
	if err := s.DeleteBlock(ctx, b); LostRace(err) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("release block %s: %w", b.CIDR, err)
	}
	return true, nil
}
