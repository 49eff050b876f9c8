package gobgp

import (
	"net/netip"
	"sync"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// flaps counts, per configured peer, the times its session left the
// established state, from GoBGP's peer state events.
type flaps struct {
	mu    sync.Mutex
	up    map[netip.Addr]bool
	count map[netip.Addr]uint64
}

func newFlaps() *flaps {
	return &flaps{up: map[netip.Addr]bool{}, count: map[netip.Addr]uint64{}}
}

// event takes a peer event.
func (f *flaps) event(ev *apiutil.WatchEventMessage_PeerEvent) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	a := ev.Peer.State.NeighborAddress
	established := ev.Peer.State.SessionState == bgppkt.BGP_FSM_ESTABLISHED
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.up[a] && !established {
		f.count[a]++
	}
	f.up[a] = established
}

// setPeers forgets the peers no longer configured.
func (f *flaps) setPeers(names map[netip.Addr]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a := range f.up {
		if _, ok := names[a]; !ok {
			delete(f.up, a)
			delete(f.count, a)
		}
	}
	for a := range f.count {
		if _, ok := names[a]; !ok {
			delete(f.count, a)
		}
	}
}

// of returns how often peer's session left the established state.
func (f *flaps) of(peer netip.Addr) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[peer]
}
