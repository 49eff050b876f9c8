// Package hopset stores lists of next hops compactly: a Set is one word, the
// handle of the canonical copy of its list, shared by every route with the
// same next hops and freed by the runtime when nothing refers to it any more.
// The speaker's table of learned routes and the dataplane's wanted routes and
// view of the kernel keep one per route: at 100k routes that halves them
// compared with slices, and spares the garbage collector 100k small objects
// each. It knows nothing of routes or BGP.
package hopset

import (
	"net/netip"
	"slices"
	"unique"
)

// Set is a list of next hops, in the order it was made with. The zero Set is
// the empty list. Sets of the same list are ==.
type Set struct{ h unique.Handle[string] }

// addrBytes is how many bytes of the canonical string one address takes: its
// 16 bytes and whether it is IPv4.
const addrBytes = 17

// Make returns the Set of addrs, which it does not keep.
func Make(addrs []netip.Addr) Set {
	if len(addrs) == 0 {
		return Set{}
	}
	b := make([]byte, 0, len(addrs)*addrBytes)
	for _, a := range addrs {
		s := a.As16()
		b = append(b, s[:]...)
		if a.Is4() {
			b = append(b, 4)
		} else {
			b = append(b, 6)
		}
	}
	return Set{unique.Make(string(b))}
}

// Len returns how many next hops s has.
func (s Set) Len() int {
	if s == (Set{}) {
		return 0
	}
	return len(s.h.Value()) / addrBytes
}

// Addrs returns s's next hops in a new slice, nil for the empty Set.
func (s Set) Addrs() []netip.Addr {
	if s == (Set{}) {
		return nil
	}
	v := s.h.Value()
	out := make([]netip.Addr, 0, len(v)/addrBytes)
	for i := 0; i+addrBytes <= len(v); i += addrBytes {
		a := netip.AddrFrom16([16]byte([]byte(v[i : i+16])))
		if v[i+16] == 4 {
			a = a.Unmap()
		}
		out = append(out, a)
	}
	return out
}

// Cache makes Sets, remembering the last list it made one of: routes come
// in runs with the same next hops (a peer's table, a node's blocks), and a
// run then costs no allocation. The zero Cache is ready; it is not safe for
// concurrent use.
type Cache struct {
	last []netip.Addr
	set  Set
}

// Make returns the Set of addrs, as Make does.
func (c *Cache) Make(addrs []netip.Addr) Set {
	if len(addrs) > 0 && slices.Equal(addrs, c.last) {
		return c.set
	}
	c.set = Make(addrs)
	c.last = append(c.last[:0], addrs...)
	return c.set
}
