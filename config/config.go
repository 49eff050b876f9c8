package config

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/flatnet-io/flatnet/wellknown"
)

// Config is the agent's whole configuration. Load returns it validated, with
// every pool's BlockSize resolved.
type Config struct {
	// NodeName is this node's name as Kubernetes knows it. Default: the host
	// name in lower case, as the kubelet names its node.
	NodeName  string    `mapstructure:"nodeName"`
	Log       Log       `mapstructure:"log"`
	API       API       `mapstructure:"api"`
	Datastore Datastore `mapstructure:"datastore"`
	Health    Health    `mapstructure:"health"`
	IPAM      IPAM      `mapstructure:"ipam"`
	BGP       BGP       `mapstructure:"bgp"`
	Policy    Policy    `mapstructure:"policy"`
}

// Policy enforces Kubernetes NetworkPolicy on this node's pods with nftables
// (docs/policy.md).
type Policy struct {
	// Enabled reads NetworkPolicy, Namespace and Pod objects and enforces
	// them in the table inet flatnet-policy. It needs the kubernetes
	// datastore: with files there is no policy. Off, the agent deletes that
	// table if an earlier run left it.
	Enabled bool `mapstructure:"enabled"`
	// Resync is how often the table is read back and repaired.
	Resync time.Duration `mapstructure:"resync"`
}

// Log says what the agent logs and how.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn or error
	Format string `mapstructure:"format"` // text or json
}

// API is the agent's gRPC API, served on a unix socket.
type API struct {
	Socket string `mapstructure:"socket"` // absolute path, shorter than 108 bytes (sun_path)
}

// Datastore says where IPAM state is kept.
type Datastore struct {
	Type       string     `mapstructure:"type"` // "file" or "kubernetes"
	File       FileStore  `mapstructure:"file"`
	Kubernetes Kubernetes `mapstructure:"kubernetes"`
}

// Kubernetes is the cluster datastore: flatnet's CRDs and Node objects,
// through the Kubernetes API.
type Kubernetes struct {
	// Kubeconfig is the path of a kubeconfig file; "" means in-cluster (the
	// pod's service account).
	Kubeconfig string `mapstructure:"kubeconfig"`
	// GCGrace is how long a pod (or node) must have been gone before its
	// addresses (or blocks) are reclaimed; GCInterval how often that is checked.
	GCGrace    time.Duration `mapstructure:"gcGrace"`
	GCInterval time.Duration `mapstructure:"gcInterval"`
	// BGPPasswordsDir is where the Secret flatnet-bgp-passwords is mounted:
	// a BGPPeer's password.secretKey names a file in it.
	BGPPasswordsDir string `mapstructure:"bgpPasswordsDir"`
}

// Health serves /healthz and /readyz for the DaemonSet's probes.
type Health struct {
	Address string `mapstructure:"address"` // host:port; "" serves none
}

// FileStore is the file datastore: one directory on the node.
type FileStore struct {
	Dir string `mapstructure:"dir"` // absolute path
	// Fsync makes every write durable before it is acknowledged. Off, a killed
	// agent still never leaves a torn file (writes are renames); only a power
	// loss could lose the last writes, or tear a block file.
	Fsync bool `mapstructure:"fsync"`
}

// IPAM says which addresses pods get and how nodes share them.
type IPAM struct {
	// Pools may be empty with the kubernetes datastore, whose IPPool objects
	// are pools too.
	Pools []Pool `mapstructure:"pools"`
	// StrictAffinity false: when a pool has no free block, borrow addresses
	// from blocks other nodes hold. True: fail with "pool exhausted" instead.
	StrictAffinity bool `mapstructure:"strictAffinity"`
	// BlockReleaseGrace is how long an empty block stays claimed by its node
	// before it is released to the pool; 0 releases it at once.
	BlockReleaseGrace time.Duration `mapstructure:"blockReleaseGrace"`
	GatewayIPv4       netip.Addr    `mapstructure:"gatewayIPv4"` // pods' IPv4 default gateway, link-local
	GatewayIPv6       netip.Addr    `mapstructure:"gatewayIPv6"` // pods' IPv6 default gateway, link-local
}

// Pool is a range of pod addresses, handed to nodes in blocks.
type Pool struct {
	Name string       `mapstructure:"name"` // unique DNS-1123 label
	CIDR netip.Prefix `mapstructure:"cidr"` // no host bits set
	// BlockSize is the prefix length of a block: 20..32 for IPv4, 116..128 for
	// IPv6, and no shorter than CIDR's. 0 means the family default, 26 for
	// IPv4 and 122 for IPv6; Load replaces it with that default.
	BlockSize int `mapstructure:"blockSize"`
}

// BGP is the node's BGP speaker: how it announces its pod blocks to the other
// nodes (the node-to-node mesh, or route reflectors) and to routers outside
// the cluster (Peers).
type BGP struct {
	// Enabled runs the BGP speaker and installs the routes it learns. Off,
	// the agent only allocates addresses.
	Enabled bool   `mapstructure:"enabled"`
	ASN     uint32 `mapstructure:"asn"` // this node's AS number
	// RouterID is the BGP identifier, an IPv4 address unique per node.
	// Unset: NodeIPv4.
	RouterID netip.Addr `mapstructure:"routerID"`
	// NodeIPv4 and NodeIPv6 are the node's addresses: where mesh peers
	// reach it, and the next hops it announces for its blocks. Unset: the
	// agent detects them.
	NodeIPv4 netip.Addr `mapstructure:"nodeIPv4"`
	NodeIPv6 netip.Addr `mapstructure:"nodeIPv6"`
	// ListenAddresses are the addresses BGP sessions are accepted on and
	// opened from; empty means every address.
	ListenAddresses []netip.Addr `mapstructure:"listenAddresses"`
	ListenPort      int          `mapstructure:"listenPort"` // -1: do not listen, only dial
	// Mesh peers this node with every other node (iBGP full mesh). Off when
	// nodes peer with route reflectors instead.
	Mesh bool `mapstructure:"mesh"`
	// MeshPassword is the TCP MD5 password of the mesh sessions; "" means
	// none. Every node must have the same.
	MeshPassword string `mapstructure:"meshPassword"`
	// MeshHoldTime and MeshKeepaliveInterval are the mesh sessions' timers;
	// 0 means 90s and a third of the hold time.
	MeshHoldTime          time.Duration `mapstructure:"meshHoldTime"`
	MeshKeepaliveInterval time.Duration `mapstructure:"meshKeepaliveInterval"`
	// MeshBFD runs BFD on the mesh sessions, so that a node that dies is
	// noticed in Interval × Multiplier rather than the hold time. Every node
	// needs it on: BFD is not negotiated.
	MeshBFD BFD `mapstructure:"meshBFD"`
	// Multipath installs every equally good path (ECMP).
	Multipath bool `mapstructure:"multipath"`
	// ConvergeTimeout bounds how long after start the agent waits for its
	// peers' End-of-RIB before deleting routes it no longer learns.
	ConvergeTimeout time.Duration `mapstructure:"convergeTimeout"`
	// APIListen is where GoBGP's gRPC API is served, for the gobgp CLI:
	// host:port on a loopback address; "" serves none.
	APIListen       string          `mapstructure:"apiListen"`
	RouteReflector  RouteReflector  `mapstructure:"routeReflector"`
	GracefulRestart GracefulRestart `mapstructure:"gracefulRestart"`
	Peers           []Peer          `mapstructure:"peers"` // explicit peers, such as top-of-rack routers
}

// RouteReflector makes this node a route reflector for the peers marked
// rrClient.
type RouteReflector struct {
	Enabled   bool       `mapstructure:"enabled"`
	ClusterID netip.Addr `mapstructure:"clusterID"` // IPv4; unset means the router ID
}

// GracefulRestart keeps routes through a restart of the agent (or a peer):
// peers keep this node's routes for RestartTime while it restarts.
type GracefulRestart struct {
	Enabled     bool          `mapstructure:"enabled"`
	RestartTime time.Duration `mapstructure:"restartTime"`
}

// Peer is an explicit BGP peer, such as a top-of-rack router.
type Peer struct {
	Name     string     `mapstructure:"name"`    // unique DNS-1123 label, for logs and status
	Address  netip.Addr `mapstructure:"address"` // unique
	Port     int        `mapstructure:"port"`    // 0 means 179
	ASN      uint32     `mapstructure:"asn"`
	Password string     `mapstructure:"password"` // TCP MD5 signature; "" means none
	// Multihop is the TTL of an eBGP session to a router that is not
	// directly connected; 0 means directly connected.
	Multihop          int           `mapstructure:"multihop"`
	HoldTime          time.Duration `mapstructure:"holdTime"`          // 0 means 90s
	KeepaliveInterval time.Duration `mapstructure:"keepaliveInterval"` // 0 means a third of the hold time
	Passive           bool          `mapstructure:"passive"`           // wait for the peer to connect
	RRClient          bool          `mapstructure:"rrClient"`          // a client of this route reflector
	Import            PeerImport    `mapstructure:"import"`
	// MaxPrefixes is the most prefixes the peer may announce per address
	// family; over it the session is shut down. 0 means no limit.
	MaxPrefixes uint32 `mapstructure:"maxPrefixes"`
	BFD         BFD    `mapstructure:"bfd"`
}

// PeerImport says which routes from a peer are accepted.
type PeerImport struct {
	// Allow lists the prefixes accepted, each with everything more specific
	// inside it. Empty means the IPAM pools.
	Allow        []netip.Prefix `mapstructure:"allow"`
	AllowDefault bool           `mapstructure:"allowDefault"` // accept 0.0.0.0/0 and ::/0
}

// BFD turns on Bidirectional Forwarding Detection for a peer.
type BFD struct {
	Enabled    bool          `mapstructure:"enabled"`
	Interval   time.Duration `mapstructure:"interval"`   // 0 means 300ms
	Multiplier int           `mapstructure:"multiplier"` // 0 means 3
}

// Default returns the built-in value of every setting, the one used when the
// file, the environment and the flags leave it unset.
func Default() Config {
	return Config{
		NodeName: hostname(),
		Log: Log{
			Level:  "info",
			Format: "text",
		},
		API: API{
			Socket: wellknown.AgentSocket,
		},
		Datastore: Datastore{
			Type:       "file",
			File:       FileStore{Dir: "/var/lib/flatnet/ipam", Fsync: true},
			Kubernetes: Kubernetes{GCGrace: 5 * time.Minute, GCInterval: time.Minute, BGPPasswordsDir: "/etc/flatnet/bgp-passwords"},
		},
		Health: Health{Address: "127.0.0.1:9797"},
		IPAM: IPAM{
			Pools: []Pool{{
				Name:      "default-ipv4",
				CIDR:      netip.MustParsePrefix("10.244.0.0/16"),
				BlockSize: 26,
			}},
			StrictAffinity:    false,
			BlockReleaseGrace: 5 * time.Minute,
			GatewayIPv4:       netip.MustParseAddr("169.254.1.1"),
			GatewayIPv6:       netip.MustParseAddr("fe80::1"),
		},
		BGP: BGP{
			ASN:             64512,
			ListenPort:      179,
			Mesh:            true,
			Multipath:       true,
			ConvergeTimeout: time.Minute,
			GracefulRestart: GracefulRestart{Enabled: true, RestartTime: 2 * time.Minute},
		},
		Policy: Policy{Enabled: false, Resync: 10 * time.Second},
	}
}

// hostname returns the host name the way the kubelet turns it into a node
// name: lower-cased. It returns "" when the host name is unknown, which
// Validate rejects.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h))
}

// logLevels maps the values of log.level to slog levels.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// Handler returns a slog handler writing to w in l's format at l's level. A
// level or format Validate would reject falls back to info and text.
func (l Log) Handler(w io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: logLevels[l.Level]}
	if l.Format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}
