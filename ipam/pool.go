package ipam

import "net/netip"

// firstUnclaimed returns the lowest block of the pool that is not in claimed. It
// steps over claimed blocks only, so it costs len(claimed)+1 steps at most however
// large the pool is (an IPv6 pool may hold 2^70 blocks).
func (p Pool) firstUnclaimed(claimed map[netip.Prefix]bool) (netip.Prefix, bool) {
	step := p.CIDR.Addr().BitLen() - p.BlockSize
	cur := p.CIDR.Addr()
	for {
		b := netip.PrefixFrom(cur, p.BlockSize)
		if !claimed[b] {
			return b, true
		}
		next, ok := addPow2(cur, step)
		if !ok || !p.CIDR.Contains(next) {
			return netip.Prefix{}, false
		}
		cur = next
	}
}

// addPow2 returns addr + 2^k, or false when that overflows the address space.
func addPow2(addr netip.Addr, k int) (netip.Addr, bool) {
	if addr.Is4() {
		b := addr.As4()
		carry := add(b[:], k)
		return netip.AddrFrom4(b), !carry
	}
	b := addr.As16()
	carry := add(b[:], k)
	return netip.AddrFrom16(b), !carry
}

// add adds 2^k to the big-endian number in b and reports a carry out of it.
func add(b []byte, k int) bool {
	i := len(b) - 1 - k/8
	if i < 0 {
		return true
	}
	sum := uint(b[i]) + 1<<(k%8)
	b[i] = byte(sum)
	for carry := sum >> 8; carry != 0; {
		i--
		if i < 0 {
			return true
		}
		sum = uint(b[i]) + carry
		b[i] = byte(sum)
		carry = sum >> 8
	}
	return false
}
