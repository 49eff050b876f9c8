package ipam

import "context"

// Store keeps claimed blocks. Its one promise is compare-and-swap per block:
// CreateBlock fails with ErrExists when the CIDR is already claimed, and
// UpdateBlock and DeleteBlock fail with ErrConflict unless the block still has the
// Revision the caller read. That is enough for many nodes to allocate at once
// without handing out an address twice; it maps onto a file under a lock as well
// as onto a Kubernetes object's resourceVersion.
//
// Reads may be served from a cache that lags behind: a stale read only costs the
// allocator a conflict and a retry, never a duplicate address.
type Store interface {
	// ListBlocks returns every claimed block, in no particular order.
	ListBlocks(ctx context.Context) ([]Block, error)
	// CreateBlock claims b.CIDR, or fails with ErrExists. It returns the block as
	// stored, with its first revision.
	CreateBlock(ctx context.Context, b Block) (Block, error)
	// UpdateBlock replaces the stored block if its revision is still b.Revision
	// (ErrConflict if not, ErrNotFound if it is gone) and returns the new version.
	UpdateBlock(ctx context.Context, b Block) (Block, error)
	// DeleteBlock releases the block if its revision is still b.Revision.
	DeleteBlock(ctx context.Context, b Block) error
}
