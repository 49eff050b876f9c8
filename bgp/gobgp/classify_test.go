package gobgp

import (
	"net/netip"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/flatnet-io/flatnet/bgp"
)

// TestClassifier checks the classifier against the rules buildImport
// installs (TestImportPolicy checks both against GoBGP).
func TestClassifier(t *testing.T) {
	mesh, tor, edge, stranger := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4"), netip.MustParseAddr("192.0.2.5")
	in := policyInput{
		pools:     pools,
		ownBlocks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/26"), netip.MustParsePrefix("fd00:10:244::/122")},
		mesh:      []netip.Addr{mesh},
		explicit: []bgp.Peer{
			{Address: tor},
			{Address: edge, Import: bgp.ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, AllowDefault: true}},
		},
	}
	c := newClassifier(in, 64512, netip.MustParseAddr("192.0.2.1"))
	for _, tc := range []struct {
		peer   netip.Addr
		prefix string
		want   cause
	}{
		{mesh, "10.244.1.0/26", causeNone},
		{mesh, "10.244.128.0/17", causeNone},
		{mesh, "10.244.0.0/16", causeOverlapsBlock}, // the pool, holding our block
		{mesh, "fd00:10:244::40/122", causeNone},
		{mesh, "10.99.0.0/24", causeOutsidePools},
		{mesh, "11.0.0.0/8", causeOutsidePools},
		{mesh, "10.244.0.0/26", causeOwnBlock},
		{mesh, "fd00:10:244::/122", causeOwnBlock},
		{mesh, "10.244.0.16/28", causeOverlapsBlock},
		{mesh, "10.244.0.0/24", causeOverlapsBlock},
		{mesh, "0.0.0.0/0", causeDefault},
		{tor, "10.244.4.0/26", causeNone},
		{tor, "10.99.0.0/24", causeOutsidePools},
		{tor, "::/0", causeDefault},
		{edge, "0.0.0.0/0", causeNone},
		{edge, "10.99.1.0/24", causeNone},
		{edge, "10.244.5.0/26", causeNotAllowed},
		{edge, "10.244.0.0/26", causeOwnBlock}, // whatever Allow says
		{stranger, "10.244.4.0/26", causeUnknownPeer},
	} {
		p := netip.MustParsePrefix(tc.prefix)
		if got := c.classify(p, &apiutil.Path{PeerAddress: tc.peer}); got != tc.want {
			t.Errorf("%v from %v: %v, want %v", p, tc.peer, got, tc.want)
		}
	}

	// Before policy: our AS in the AS path, our router ID as originator.
	loop := &apiutil.Path{PeerAddress: tor, Attrs: []bgppkt.PathAttributeInterface{
		bgppkt.NewPathAttributeAsPath([]bgppkt.AsPathParamInterface{bgppkt.NewAs4PathParam(bgppkt.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65000, 64512})}),
	}}
	if got := c.classify(netip.MustParsePrefix("10.244.1.0/26"), loop); got != causeASLoop {
		t.Errorf("a path through our AS: %v, want %v", got, causeASLoop)
	}
	origin, err := bgppkt.NewPathAttributeOriginatorId(netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	reflected := &apiutil.Path{PeerAddress: mesh, PeerASN: 64512, Attrs: []bgppkt.PathAttributeInterface{origin}}
	if got := c.classify(netip.MustParsePrefix("10.244.1.0/26"), reflected); got != causeOriginator {
		t.Errorf("a path we originated, reflected: %v, want %v", got, causeOriginator)
	}
}
