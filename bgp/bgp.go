// Package bgp is flatnet's seam to its BGP speaker: the Speaker interface and
// the types it speaks (Config, Peer, Advert, Route, PeerStatus), all ours.
//
// The agent tells a Speaker declaratively what to announce (SetAdvertised)
// and whom to peer with (SetPeers); the Speaker tells the agent, through
// Watch, which routes it learned, and through Converged when the initial
// exchange with its peers is over. Package bgp/gobgp implements Speaker with
// an embedded GoBGP; package bgp/bgptest has a fake for unit tests.
//
// This package holds no BGP implementation and must not import one: no
// GoBGP type appears here. It opens no socket and touches no kernel state.
package bgp

import (
	"context"
	"net/netip"
	"time"
)

// Speaker is a BGP speaker. Every method is safe for concurrent use.
type Speaker interface {
	// Start starts the speaker: it listens for peers and is ready for
	// SetAdvertised and SetPeers. A Speaker is started at most once.
	Start(ctx context.Context) error
	// Stop stops the speaker. graceful true is a planned restart: the
	// sessions that negotiated graceful restart are closed without a
	// NOTIFICATION, so that those peers keep our routes (as stale) until we
	// come back or their restart timer runs out; the other sessions get a
	// Cease. graceful false sends a Cease to every peer, which withdraws our
	// routes at once. Stopping a stopped speaker does nothing.
	Stop(ctx context.Context, graceful bool) error
	// SetAdvertised sets the complete list of prefixes this node announces.
	// The speaker announces and withdraws only what changed since the last
	// call. Prefixes must be unique; see Advert for the rules.
	SetAdvertised(ctx context.Context, adverts []Advert) error
	// SetPeers sets the complete list of peers: peers not yet known are
	// added, peers no longer listed are removed (with a Cease), peers whose
	// settings changed are updated. Other sessions are left alone.
	SetPeers(ctx context.Context, peers []Peer) error
	// Status returns the state of every configured peer, sorted by name.
	Status(ctx context.Context) ([]PeerStatus, error)
	// Watch calls fn with the learned routes: first every route known at
	// the time of the call (if any), then each change, until ctx is done.
	// Calls to one fn are sequential and never concurrent; a slow fn gets
	// changes merged. A Route with no NextHops is a withdrawal. A prefix this
	// speaker announces itself is not reported as learned, whoever else
	// announces it too.
	Watch(ctx context.Context, fn func([]Route))
	// Converged is closed once the speaker has learned what its peers had
	// to say after Start, and every route learned until then has been
	// handed to the fns given to Watch: every peer of the first SetPeers
	// call (still configured) is established and has sent End-of-RIB for
	// each address family it negotiated graceful restart for, or
	// Config.ConvergeTimeout has passed since Start. The dataplane deletes
	// stale kernel routes only after this.
	Converged() <-chan struct{}
}

// Config is a speaker's own settings, fixed for its lifetime.
type Config struct {
	ASN      uint32     // our autonomous system number
	RouterID netip.Addr // BGP identifier, IPv4
	// ListenAddresses are the addresses the speaker accepts sessions on;
	// empty means every address. Outgoing sessions are also opened from the
	// first of them that is of the peer's family, if any.
	ListenAddresses []netip.Addr
	// ListenPort is the TCP port to listen on: 0 means 179, -1 means do not
	// listen at all (the speaker only dials).
	ListenPort int32
	// Pools are the pod address pools: from mesh peers (and from explicit
	// peers without an ImportPolicy.Allow list) only prefixes inside them
	// are accepted.
	Pools           []netip.Prefix
	RouteReflector  RouteReflector
	GracefulRestart GracefulRestart
	// Multipath installs every equally good path of a prefix (ECMP): a
	// Route then has several NextHops. Off, only the best path's.
	Multipath bool
	// ConvergeTimeout bounds how long Converged waits for peers after Start.
	// It is also how long a restarting speaker (GracefulRestart.Restarting)
	// holds its own routes back waiting for its peers' End-of-RIB.
	// 0 means 60s.
	ConvergeTimeout time.Duration
	// APIListen is where GoBGP serves its gRPC API, for the gobgp CLI, as
	// host:port on a loopback address. "" (the default) serves none.
	APIListen string
}

// RouteReflector makes this speaker a route reflector (RFC 4456) for the
// peers marked RRClient.
type RouteReflector struct {
	Enabled   bool
	ClusterID netip.Addr // IPv4; unset means the router ID
}

// GracefulRestart configures graceful restart (RFC 4724) on every session,
// in both roles: we keep a restarting peer's routes, and peers keep ours
// while we restart (see Speaker.Stop).
type GracefulRestart struct {
	Enabled bool
	// RestartTime is how long peers keep our routes after our session goes
	// down without a NOTIFICATION; whole seconds, at most 4095s. 0 means 120s.
	RestartTime time.Duration
	// Restarting says this start follows a graceful Stop: the speaker sets
	// the Restart State and Forwarding bits, so peers keep our stale routes
	// until we have resent ours, and it sends ours only after the peers
	// have sent theirs (or ConvergeTimeout). It applies to the peers of the
	// first SetPeers call.
	Restarting bool
}

// Peer is one BGP neighbour.
type Peer struct {
	Name     string     // unique; used in logs and Status
	Address  netip.Addr // unique
	Port     uint16     // 0 means 179
	ASN      uint32
	Password string // TCP MD5 signature (RFC 2385); "" means none
	// Mesh marks a node-to-node mesh peer (another flatnet node), as opposed
	// to an explicit peer such as a top-of-rack router. Mesh peers' routes
	// are accepted only inside Config.Pools; Import is ignored for them.
	Mesh bool
	// RRClient makes the peer a client of this route reflector; it needs
	// Config.RouteReflector.Enabled and an iBGP peer.
	RRClient bool
	// Multihop is the TTL of an eBGP session to a peer that is not directly
	// connected; 0 means directly connected (TTL 1). Ignored for iBGP.
	Multihop uint8
	// HoldTime and KeepaliveInterval are proposed in OPEN; whole seconds.
	// 0 means 90s and a third of the hold time.
	HoldTime, KeepaliveInterval time.Duration
	Passive                     bool // never dial: wait for the peer to connect
	Import                      ImportPolicy
	// MaxPrefixes is the most prefixes the peer may announce per address
	// family, counted before import policy; over it the session is shut
	// down (Status shows "prefix-limit") until SetPeers changes MaxPrefixes.
	// 0 means no limit.
	MaxPrefixes uint32
	BFD         *BFD // nil means no BFD
}

// ImportPolicy says what an explicit (non-mesh) peer may announce to us.
// Whatever it says, a prefix that overlaps a block we announce ourselves (an
// Advert shorter than /32 or /128) is rejected.
type ImportPolicy struct {
	// Allow lists the prefixes accepted: each entry accepts itself and every
	// more specific prefix inside it ("le 32" / "le 128"). Empty means
	// Config.Pools. The default route is never matched by Allow.
	Allow []netip.Prefix
	// AllowDefault accepts the default route, 0.0.0.0/0 and ::/0.
	AllowDefault bool
}

// BFD turns on Bidirectional Forwarding Detection (RFC 5880, single hop, UDP
// port 3784) for a peer: when BFD declares it down, the BGP session is reset
// and the peer's routes withdrawn; a new session follows within seconds of
// the path coming back. BFD stops with the speaker, after the sessions: a
// peer sees a graceful Stop as the restart it is (the session ended first)
// and keeps our routes, as long as a BFD down while it waits does not end
// graceful restart (FRR: `neighbor X bfd check-control-plane-failure`;
// flatnet's speaker: it does not).
type BFD struct {
	// Interval is the desired transmit and required receive interval;
	// whole microseconds. 0 means 300ms.
	Interval time.Duration
	// Multiplier is how many missed packets declare the peer down, 1..255.
	// 0 means 3.
	Multiplier uint32
}

// Advert is a prefix this node announces and the next hop peers should use
// for it: an IPv4 prefix needs an IPv4 next hop, an IPv6 prefix an IPv6 one
// (it is carried over IPv4 sessions too, with that next hop).
type Advert struct {
	Prefix  netip.Prefix // no host bits set
	NextHop netip.Addr
}

// Route is a learned route: the best next hops for a prefix (several with
// Config.Multipath, one per peer path of equal preference), sorted. No next
// hop means the route was withdrawn.
type Route struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// PeerStatus is the state of one peer's session and its route counts.
// Received counts the prefixes the peer announces; Accepted those that
// passed import policy; Rejected the rest (Received = Accepted + Rejected);
// Advertised those we send it. Counts are 0 unless the session is
// established.
type PeerStatus struct {
	Name    string
	Address netip.Addr
	ASN     uint32
	State   string // one of the State constants
	// BFD is the peer's BFD session state: "" without BFD, else one of the
	// BFD constants.
	BFD    string
	Uptime time.Duration
	// Received, Accepted, Advertised and Rejected are counts of prefixes.
	Received, Accepted, Advertised, Rejected uint64
	// RejectedBy splits Rejected by reason (the Reject constants); reasons
	// with no prefix are left out, and so is the map when nothing is
	// rejected.
	RejectedBy map[string]uint64
	// Flaps counts the times the session left the established state since
	// the peer was configured (a peer removed and added again starts at 0).
	// Unlike the other counts it is kept whatever the session's state.
	Flaps uint64
}

// PeerStatus.RejectedBy keys: why a prefix a peer announces is not accepted.
const (
	// RejectLoop: our AS is in its AS path, or we are its originator (a
	// route reflected back); the speaker drops these before import policy.
	RejectLoop = "loop"
	// RejectOwnBlock: it is a block this node announces, coming back.
	RejectOwnBlock = "own_block"
	// RejectOverlapsBlock: it lies inside a block this node announces, or
	// contains one.
	RejectOverlapsBlock = "overlaps_block"
	// RejectDefault: the default route, from a peer without AllowDefault.
	RejectDefault = "default_route"
	// RejectOutsidePools: outside the pod pools (mesh peers, and explicit
	// peers without an Allow list).
	RejectOutsidePools = "outside_pools"
	// RejectNotAllowed: outside the peer's ImportPolicy.Allow.
	RejectNotAllowed = "not_allowed"
	// RejectUnknownPeer: from a peer being removed.
	RejectUnknownPeer = "unknown_peer"
)

// PeerStatus.State values: the BGP FSM states (RFC 4271), and PrefixLimit for
// a session shut down because the peer exceeded Peer.MaxPrefixes.
const (
	StateIdle        = "idle"
	StateConnect     = "connect"
	StateActive      = "active"
	StateOpenSent    = "opensent"
	StateOpenConfirm = "openconfirm"
	StateEstablished = "established"
	StatePrefixLimit = "prefix-limit"
)

// PeerStatus.BFD values (RFC 5880 session states).
const (
	BFDDown      = "down"
	BFDInit      = "init"
	BFDUp        = "up"
	BFDAdminDown = "admin-down"
)

// Defaults the zero values of Config, Peer and BFD stand for.
const (
	DefaultPort            = 179
	DefaultRestartTime     = 120 * time.Second
	DefaultConvergeTimeout = 60 * time.Second
	DefaultHoldTime        = 90 * time.Second
	DefaultBFDInterval     = 300 * time.Millisecond
	DefaultBFDMultiplier   = 3
)
