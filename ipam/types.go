package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Family is an IP address family.
type Family int

// The address families a pool can belong to.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", int(f))
}

// FamilyOf returns the family of addr (an IPv4-mapped IPv6 address counts as IPv6).
func FamilyOf(addr netip.Addr) Family {
	if addr.Is4() {
		return IPv4
	}
	return IPv6
}

// Block sizes a pool may use, per family: at most 4096 addresses a block.
const (
	MinBlockSizeIPv4 = 20
	MinBlockSizeIPv6 = 116
)

// MaxPools is the most pools an allocator takes: every pool is checked
// against every other for overlaps, and a cluster has a handful.
const MaxPools = 1024

// BlockSizes is the range of block sizes (prefix lengths) a pool of family f
// may use.
func BlockSizes(f Family) (lo, hi int) {
	if f == IPv4 {
		return MinBlockSizeIPv4, 32
	}
	return MinBlockSizeIPv6, 128
}

// DefaultBlockSize is the block size of a pool of family f that names none:
// /26 (64 addresses) for IPv4, /122 for IPv6.
func DefaultBlockSize(f Family) int {
	if f == IPv4 {
		return 26
	}
	return 122
}

// Errors the allocator returns; callers test them with errors.Is.
var (
	// ErrExhausted: no address is left for the request in any pool of its family.
	ErrExhausted = errors.New("pool exhausted")
	// ErrInvalid: the request itself is malformed.
	ErrInvalid = errors.New("invalid request")
)

// Errors a Store returns; the allocator reacts to each.
var (
	ErrNotFound = errors.New("block not found")
	ErrExists   = errors.New("block already claimed")
	ErrConflict = errors.New("block changed since it was read")
)

// Pool is a range of addresses split into equal blocks.
type Pool struct {
	Name      string
	CIDR      netip.Prefix
	BlockSize int // prefix length of each block
}

// NewPool checks that the pool's numbers make sense and returns it.
func NewPool(name string, cidr netip.Prefix, blockSize int) (Pool, error) {
	p := Pool{Name: name, CIDR: cidr, BlockSize: blockSize}
	if name == "" {
		return p, fmt.Errorf("pool %s: %w: empty name", cidr, ErrInvalid)
	}
	if !cidr.IsValid() || cidr.Masked() != cidr {
		return p, fmt.Errorf("pool %s: %w: CIDR %s is not a network address", name, ErrInvalid, cidr)
	}
	if lo, hi := BlockSizes(p.Family()); blockSize < lo || blockSize > hi {
		return p, fmt.Errorf("pool %s: %w: block size /%d outside /%d../%d", name, ErrInvalid, blockSize, lo, hi)
	}
	if blockSize < cidr.Bits() {
		return p, fmt.Errorf("pool %s: %w: block size /%d does not fit in %s", name, ErrInvalid, blockSize, cidr)
	}
	return p, nil
}

// Family is the pool's address family.
func (p Pool) Family() Family { return FamilyOf(p.CIDR.Addr()) }

// BlockBits is log2 of the number of blocks in the pool.
func (p Pool) BlockBits() int { return p.BlockSize - p.CIDR.Bits() }

// Attrs describe what an allocation is for.
type Attrs struct {
	Node      string `json:"node"`
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
}

// Allocation is one address held by one handle.
type Allocation struct {
	Addr      netip.Addr `json:"addr"`
	Handle    string     `json:"handle"`
	Attrs     Attrs      `json:"attrs"`
	Allocated time.Time  `json:"allocated"`
}

// Block is a slice of a pool claimed by one node (its affinity). Other nodes may
// borrow addresses from it when their pool has no free block left.
type Block struct {
	CIDR        netip.Prefix `json:"cidr"`
	Affinity    string       `json:"affinity"`
	Allocations []Allocation `json:"allocations"` // sorted by address
	// EmptySince is when the block lost its last allocation; zero while in use.
	EmptySince time.Time `json:"emptySince,omitzero"`
	// Damaged is when the block was recovered from a damaged copy (the file
	// store sets it aside and keeps what it could read): the allocations it
	// lost may still be in use, so no new address is placed in it and it is
	// not released when empty, while what it lists is served and released
	// as usual. Zero for a sound block. An operator clears it (docs/operations.md).
	Damaged time.Time `json:"damaged,omitzero"`
	// Revision is set by the Store; an update must carry the revision it read.
	Revision string `json:"-"`
}

// Size is the number of addresses in the block.
func (b *Block) Size() int { return 1 << (b.CIDR.Addr().BitLen() - b.CIDR.Bits()) }

// Free is the number of addresses not allocated.
func (b *Block) Free() int { return b.Size() - len(b.Allocations) }

// hasRoom tells whether a new address may be placed in the block: it has a
// free one and is not damaged.
func (b *Block) hasRoom() bool { return b.Free() > 0 && b.Damaged.IsZero() }

// firstFree returns the lowest address of the block that nobody holds.
func (b *Block) firstFree() (netip.Addr, bool) {
	addr := b.CIDR.Addr()
	for _, a := range b.Allocations { // sorted: the first gap is the answer
		if a.Addr != addr {
			break
		}
		addr = addr.Next()
	}
	if !b.CIDR.Contains(addr) {
		return netip.Addr{}, false
	}
	return addr, true
}

// insert adds a, keeping Allocations sorted, and marks the block in use.
func (b *Block) insert(a Allocation) {
	i, _ := slices.BinarySearchFunc(b.Allocations, a.Addr, func(x Allocation, t netip.Addr) int { return x.Addr.Compare(t) })
	b.Allocations = slices.Insert(b.Allocations, i, a)
	b.EmptySince = time.Time{}
}

// removeIf drops the allocations for which drop is true and returns them.
func (b *Block) removeIf(drop func(Allocation) bool) []Allocation {
	var gone []Allocation
	b.Allocations = slices.DeleteFunc(b.Allocations, func(a Allocation) bool {
		if drop(a) {
			gone = append(gone, a)
			return true
		}
		return false
	})
	return gone
}

// Clone returns a deep copy, so a caller can change it without touching the
// original (stores hand out clones of what they hold).
func (b Block) Clone() Block {
	b.Allocations = slices.Clone(b.Allocations)
	return b
}
