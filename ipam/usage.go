package ipam

import (
	"net/netip"
	"slices"
)

// Placement is where an address lies: the pool it belongs to and the block of
// that pool it falls in (claimed or not).
type Placement struct {
	Pool  string
	Block netip.Prefix
}

// Placement returns where addr lies among the configured pools; false when it
// is in none of them.
func (a *Allocator) Placement(addr netip.Addr) (Placement, bool) {
	i := slices.IndexFunc(a.cfg.Pools, func(p Pool) bool { return p.CIDR.Contains(addr) })
	if i < 0 {
		return Placement{}, false
	}
	p := a.cfg.Pools[i]
	return Placement{Pool: p.Name, Block: netip.PrefixFrom(addr, p.BlockSize).Masked()}, true
}

// Room tells, for each family that has a pool, whether a request of this
// node could get an address of it now, given blocks (as Blocks returns them):
// the same three ways Allocate tries — a free address in a block of its own,
// a block nobody has claimed, or, unless StrictAffinity, a free address in
// another node's block.
func (a *Allocator) Room(blocks []Block) map[Family]bool {
	claimed := make(map[netip.Prefix]bool, len(blocks))
	room := map[Family]bool{}
	for _, p := range a.cfg.Pools {
		room[p.Family()] = false
	}
	for _, b := range blocks {
		claimed[b.CIDR] = true
		if b.hasRoom() && (b.Affinity == a.cfg.Node || !a.cfg.StrictAffinity) {
			if _, ok := a.Placement(b.CIDR.Addr()); ok {
				room[FamilyOf(b.CIDR.Addr())] = true
			}
		}
	}
	for _, p := range a.cfg.Pools {
		if _, ok := p.firstUnclaimed(claimed); ok {
			room[p.Family()] = true
		}
	}
	return room
}
