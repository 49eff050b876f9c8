package hopset

import (
	"net/netip"
	"slices"
	"testing"
)

func TestSet(t *testing.T) {
	for _, list := range [][]string{
		nil,
		{"192.0.2.1"},
		{"2001:db8::1"},
		{"192.0.2.2", "192.0.2.1"}, // order kept
		{"::ffff:192.0.2.1", "fe80::1"},
	} {
		var addrs []netip.Addr
		for _, a := range list {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		s := Make(addrs)
		if got := s.Addrs(); !slices.Equal(got, addrs) || s.Len() != len(addrs) {
			t.Errorf("Make(%v): Addrs() = %v, Len() = %d", addrs, got, s.Len())
		}
		if Make(slices.Clone(addrs)) != s {
			t.Errorf("Make(%v) twice: not equal", addrs)
		}
	}
	if Make([]netip.Addr{netip.MustParseAddr("192.0.2.1")}) == Make([]netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1")}) {
		t.Error("an IPv4 address and its IPv4-mapped IPv6 form make the same Set")
	}
}

func TestCache(t *testing.T) {
	var c Cache
	a := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	b := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	for _, list := range [][]netip.Addr{a, a, b, a, nil} {
		if got, want := c.Make(list), Make(list); got != want {
			t.Errorf("Cache.Make(%v) = %v, want %v", list, got.Addrs(), want.Addrs())
		}
	}
	buf := slices.Clone(a)
	s := c.Make(buf)
	buf[0] = netip.MustParseAddr("192.0.2.9") // the caller's slice changes: not the cache's copy
	if got := c.Make(buf); got == s {
		t.Error("Cache.Make kept the caller's slice")
	}
	c.Make(b)
	if n := testing.AllocsPerRun(100, func() { c.Make(b) }); n != 0 {
		t.Errorf("Cache.Make of the same list again: %v allocations, want 0", n)
	}
}
