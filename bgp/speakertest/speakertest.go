// Package speakertest is the bgp.Speaker contract as a test suite, for what
// needs no peer: every Speaker runs it against itself — the GoBGP speaker
// and the bgptest fake — so that unit tests with the fake hold for the real
// one. Sessions, routes and graceful restart are the real speaker's own
// tests (two speakers on loopback).
package speakertest

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/flatnet-io/flatnet/bgp"
)

// Config is a speaker configuration the suite's peers are valid against.
func Config() bgp.Config {
	return bgp.Config{ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.10"), ListenPort: -1}
}

// Run runs the contract against speakers made by newSpeaker from cfg, one
// fresh, unstarted speaker a test.
func Run(t *testing.T, newSpeaker func(t *testing.T, cfg bgp.Config) bgp.Speaker) {
	t.Run("NotStarted", func(t *testing.T) { testNotStarted(t, newSpeaker(t, Config())) })
	t.Run("StartOnce", func(t *testing.T) { testStartOnce(t, newSpeaker(t, Config())) })
	t.Run("Validates", func(t *testing.T) { testValidates(t, newSpeaker(t, Config())) })
	t.Run("StatusOfEveryPeer", func(t *testing.T) { testStatus(t, newSpeaker(t, Config())) })
	t.Run("StopTwice", func(t *testing.T) { testStopTwice(t, newSpeaker(t, Config())) })
}

var (
	advert = bgp.Advert{Prefix: netip.MustParsePrefix("10.244.0.0/26"), NextHop: netip.MustParseAddr("192.0.2.10")}
	peerB  = bgp.Peer{Name: "b", Address: netip.MustParseAddr("192.0.2.12"), ASN: 65002, Passive: true}
	peerA  = bgp.Peer{Name: "a", Address: netip.MustParseAddr("192.0.2.11"), ASN: 65001, Passive: true}
)

func start(t *testing.T, s bgp.Speaker) {
	t.Helper()
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop(t.Context(), false) })
}

// A speaker that has not started refuses to be told anything.
func testNotStarted(t *testing.T, s bgp.Speaker) {
	if err := s.SetAdvertised(t.Context(), []bgp.Advert{advert}); err == nil {
		t.Error("SetAdvertised before Start succeeded")
	}
	if err := s.SetPeers(t.Context(), []bgp.Peer{peerA}); err == nil {
		t.Error("SetPeers before Start succeeded")
	}
	if _, err := s.Status(t.Context()); err == nil {
		t.Error("Status before Start succeeded")
	}
}

func testStartOnce(t *testing.T, s bgp.Speaker) {
	start(t, s)
	if err := s.Start(t.Context()); err == nil {
		t.Error("second Start succeeded")
	}
}

// Arguments are checked by the bgp package's rules, whoever implements it.
func testValidates(t *testing.T, s bgp.Speaker) {
	start(t, s)
	if err := s.SetAdvertised(t.Context(), []bgp.Advert{advert, advert}); err == nil {
		t.Error("SetAdvertised with a prefix twice succeeded")
	}
	if err := s.SetAdvertised(t.Context(), []bgp.Advert{advert}); err != nil {
		t.Errorf("SetAdvertised: %v", err)
	}
	dup := peerB
	dup.Name = peerA.Name
	if err := s.SetPeers(t.Context(), []bgp.Peer{peerA, dup}); err == nil {
		t.Error("SetPeers with a name twice succeeded")
	}
	bad := peerA
	bad.ASN = bgp.ASTrans
	if err := s.SetPeers(t.Context(), []bgp.Peer{bad}); err == nil {
		t.Error("SetPeers with an AS_TRANS peer succeeded")
	}
}

// Status has every configured peer, sorted by name, and forgets removed ones.
func testStatus(t *testing.T, s bgp.Speaker) {
	start(t, s)
	if err := s.SetPeers(t.Context(), []bgp.Peer{peerB, peerA}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	names := func() []string {
		st, err := s.Status(t.Context())
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		var out []string
		for _, p := range st {
			out = append(out, p.Name)
			if p.State == bgp.StateEstablished {
				t.Errorf("peer %s established with nobody there", p.Name)
			}
		}
		return out
	}
	if got := names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Status names = %v, want [a b]", got)
	}
	if err := s.SetPeers(t.Context(), []bgp.Peer{peerB}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	if got := names(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Status names after removing a = %v, want [b]", got)
	}
}

// Stopping a stopped speaker does nothing; a stopped one refuses calls.
func testStopTwice(t *testing.T, s bgp.Speaker) {
	start(t, s)
	for range 2 {
		if err := s.Stop(t.Context(), true); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}
	if err := s.SetPeers(t.Context(), nil); err == nil {
		t.Error("SetPeers after Stop succeeded")
	}
}
