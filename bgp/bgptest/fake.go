// Package bgptest provides Speaker, an in-memory bgp.Speaker for other
// packages' unit tests: it records what it is told, lets the test play the
// peers (Learn, SetStatus, Converge) and fail calls on demand (Fail).
//
// It speaks no BGP and opens no socket. It is for tests only.
package bgptest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/internal/feed"
)

// Methods of bgp.Speaker, to name in Fail and Calls.
const (
	Start         = "Start"
	Stop          = "Stop"
	SetAdvertised = "SetAdvertised"
	SetPeers      = "SetPeers"
	Status        = "Status"
)

// ErrNotStarted is returned by SetAdvertised, SetPeers and Status before
// Start or after Stop, as the real speaker does.
var ErrNotStarted = errors.New("bgp speaker not running")

// Speaker is a fake bgp.Speaker. Its methods validate their arguments the
// way the real speaker does (bgp.ValidateAdverts, bgp.ValidatePeers).
type Speaker struct {
	cfg       bgp.Config
	routes    *feed.Feed
	converged chan struct{}
	once      sync.Once

	mu       sync.Mutex
	running  bool
	graceful *bool // how the last Stop stopped; nil before one
	adverts  []bgp.Advert
	peers    []bgp.Peer
	status   []bgp.PeerStatus
	fail     map[string]error
	calls    map[string]int
}

var _ bgp.Speaker = (*Speaker)(nil)

// New returns a fake speaker with configuration cfg, used to validate peers.
func New(cfg bgp.Config) *Speaker {
	return &Speaker{
		cfg:       cfg,
		routes:    feed.New(),
		converged: make(chan struct{}),
		fail:      map[string]error{},
		calls:     map[string]int{},
	}
}

// Fail makes every later call of method return err; nil clears it.
func (s *Speaker) Fail(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[method] = err
}

// Calls returns how many times method was called.
func (s *Speaker) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// call counts a call of method and returns the error it must fail with.
func (s *Speaker) call(method string) error {
	s.calls[method]++
	return s.fail[method]
}

// Start implements bgp.Speaker.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.call(Start); err != nil {
		return err
	}
	if s.running || s.graceful != nil {
		return errors.New("bgp speaker started twice")
	}
	s.running = true
	return nil
}

// Stop implements bgp.Speaker.
func (s *Speaker) Stop(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.call(Stop); err != nil {
		return err
	}
	s.running = false
	s.graceful = &graceful
	return nil
}

// Stopped reports whether Stop was called, and with which graceful.
func (s *Speaker) Stopped() (stopped, graceful bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.graceful == nil {
		return false, false
	}
	return true, *s.graceful
}

// SetAdvertised implements bgp.Speaker.
func (s *Speaker) SetAdvertised(ctx context.Context, adverts []bgp.Advert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.call(SetAdvertised); err != nil {
		return err
	}
	if !s.running {
		return ErrNotStarted
	}
	if err := bgp.ValidateAdverts(adverts); err != nil {
		return err
	}
	s.adverts = slices.Clone(adverts)
	return nil
}

// Adverts returns what the last successful SetAdvertised set.
func (s *Speaker) Adverts() []bgp.Advert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.adverts)
}

// SetPeers implements bgp.Speaker.
func (s *Speaker) SetPeers(ctx context.Context, peers []bgp.Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.call(SetPeers); err != nil {
		return err
	}
	if !s.running {
		return ErrNotStarted
	}
	if err := bgp.ValidatePeers(s.cfg, peers); err != nil {
		return err
	}
	s.peers = slices.Clone(peers)
	return nil
}

// Peers returns what the last successful SetPeers set.
func (s *Speaker) Peers() []bgp.Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.peers)
}

// Status implements bgp.Speaker: every configured peer, sorted by name, idle
// unless SetStatus says otherwise for its name.
func (s *Speaker) Status(ctx context.Context) ([]bgp.PeerStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.call(Status); err != nil {
		return nil, err
	}
	if !s.running {
		return nil, ErrNotStarted
	}
	out := make([]bgp.PeerStatus, 0, len(s.peers))
	for _, p := range s.peers {
		st := bgp.PeerStatus{Name: p.Name, Address: p.Address, ASN: p.ASN, State: bgp.StateIdle}
		if i := slices.IndexFunc(s.status, func(x bgp.PeerStatus) bool { return x.Name == p.Name }); i >= 0 {
			st = s.status[i]
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b bgp.PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// SetStatus sets the status Status returns for the peers of those names.
func (s *Speaker) SetStatus(status []bgp.PeerStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = slices.Clone(status)
}

// Watch implements bgp.Speaker.
func (s *Speaker) Watch(ctx context.Context, fn func([]bgp.Route)) {
	s.routes.Watch(ctx, fn)
}

// Learn plays the peers: the routes are passed to the watchers as if
// learned (a Route without NextHops withdraws the prefix).
func (s *Speaker) Learn(routes ...bgp.Route) {
	s.routes.Publish(routes)
}

// Routes returns the routes learned so far.
func (s *Speaker) Routes() []bgp.Route {
	return s.routes.Routes()
}

// Converged implements bgp.Speaker.
func (s *Speaker) Converged() <-chan struct{} {
	return s.converged
}

// Converge closes the Converged channel once every watcher has been handed
// the routes learned before, as the real speaker does, and returns then.
// Calling it again does nothing.
func (s *Speaker) Converge() {
	s.once.Do(func() {
		done := make(chan struct{})
		s.routes.Barrier(func() { close(done) })
		<-done
		close(s.converged)
	})
}
