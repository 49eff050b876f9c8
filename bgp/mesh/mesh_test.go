package mesh

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/bgp"
)

var (
	n1 = Node{Name: "node1", IPv4: netip.MustParseAddr("192.0.2.1"), IPv6: netip.MustParseAddr("2001:db8::1"), ASN: 64512}
	n2 = Node{Name: "node2", IPv4: netip.MustParseAddr("192.0.2.2"), ASN: 64512}
	n3 = Node{Name: "node3", IPv6: netip.MustParseAddr("2001:db8::3"), ASN: 64513}
	n4 = Node{Name: "node4", IPv6: netip.MustParseAddr("2001:db8::4"), ASN: 64512}
)

func TestPeers(t *testing.T) {
	tmpl := bgp.Peer{Password: "s3cret", HoldTime: 9 * time.Second}
	got := Peers(n1, []Node{n3, n1, n2, {Name: "broken"}}, tmpl)
	want := []bgp.Peer{
		{Name: "mesh-node2", Address: n2.IPv4, ASN: 64512, Mesh: true, Password: "s3cret", HoldTime: 9 * time.Second},
		{Name: "mesh-node3", Address: n3.IPv6, ASN: 64513, Mesh: true, Password: "s3cret", HoldTime: 9 * time.Second},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Peers (-want +got):\n%s", diff)
	}
	// An IPv6-only node cannot peer with an IPv4-only one.
	if got := Peers(n4, []Node{n2, n4}, bgp.Peer{}); len(got) != 0 {
		t.Errorf("IPv6-only node4 peers with IPv4-only node2: %v", got)
	}
}

func TestValidate(t *testing.T) {
	for _, n := range []Node{
		{}, {Name: "x", ASN: 1}, {Name: "x", IPv4: n2.IPv4},
		{Name: "x", IPv4: n3.IPv6, ASN: 1}, {Name: "x", IPv6: n2.IPv4, ASN: 1},
	} {
		if n.Validate() == nil {
			t.Errorf("%+v validates", n)
		}
	}
}

func TestFileRegistry(t *testing.T) {
	dir := t.TempDir()
	r, err := NewFileRegistry(dir, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan []Node, 10)
	go r.Watch(ctx, func(n []Node) { seen <- n })
	next := func() []Node {
		t.Helper()
		select {
		case n := <-seen:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("no change seen")
			return nil
		}
	}
	if got := next(); len(got) != 0 {
		t.Errorf("empty registry: %v", got)
	}
	for _, n := range []Node{n2, n1} {
		if err := r.Register(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for got := next(); len(got) != 2; got = next() {
	}
	// A junk file is ignored, not fatal; a bad registration is refused.
	if err := os.WriteFile(filepath.Join(dir, "junk.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, Node{Name: "../escape", IPv4: n2.IPv4, ASN: 1}); err == nil {
		t.Error("registered a name with a slash")
	}
	// Agents never deregister; an operator removes a gone node's record.
	if err := os.Remove(filepath.Join(dir, "node2.json")); err != nil {
		t.Fatal(err)
	}
	got := next()
	if diff := cmp.Diff([]Node{n1}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("after removing node2's record (-want +got):\n%s", diff)
	}
}
