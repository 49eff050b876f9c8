package bgptest

import (
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/speakertest"
)

func TestFakeSpeaker(t *testing.T) {
	ctx := t.Context()
	s := New(bgp.Config{ASN: 64512})
	if err := s.SetPeers(ctx, nil); !errors.Is(err, ErrNotStarted) {
		t.Errorf("SetPeers before Start = %v, want ErrNotStarted", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	advert := bgp.Advert{Prefix: netip.MustParsePrefix("10.244.0.0/26"), NextHop: netip.MustParseAddr("192.0.2.10")}
	if err := s.SetAdvertised(ctx, []bgp.Advert{advert}); err != nil {
		t.Fatal(err)
	}
	if got := s.Adverts(); len(got) != 1 || got[0] != advert {
		t.Errorf("Adverts() = %v", got)
	}
	if err := s.SetAdvertised(ctx, []bgp.Advert{advert, advert}); err == nil {
		t.Errorf("SetAdvertised with a prefix twice = nil, want the validation error")
	}
	boom := errors.New("boom")
	s.Fail(SetPeers, boom)
	if err := s.SetPeers(ctx, nil); !errors.Is(err, boom) || s.Calls(SetPeers) != 2 {
		t.Errorf("SetPeers after Fail = %v (%d calls), want boom", err, s.Calls(SetPeers))
	}

	// Routes learned before Watch come first; Converge waits for watchers.
	route := bgp.Route{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHops: []netip.Addr{netip.MustParseAddr("192.0.2.11")}}
	s.Learn(route)
	var mu sync.Mutex
	var got []bgp.Route
	s.Watch(ctx, func(rs []bgp.Route) {
		mu.Lock()
		got = append(got, rs...)
		mu.Unlock()
	})
	s.Converge()
	<-s.Converged()
	mu.Lock()
	if len(got) != 1 || got[0].Prefix != route.Prefix {
		t.Errorf("watched %v before Converged, want %v", got, route)
	}
	mu.Unlock()

	if err := s.Stop(ctx, true); err != nil {
		t.Fatal(err)
	}
	if stopped, graceful := s.Stopped(); !stopped || !graceful {
		t.Errorf("Stopped() = %v, %v; want true, true", stopped, graceful)
	}
}

func TestContract(t *testing.T) {
	speakertest.Run(t, func(t *testing.T, cfg bgp.Config) bgp.Speaker { return New(cfg) })
}
