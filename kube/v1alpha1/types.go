package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPPool is a range of pod addresses that nodes claim in blocks. It is
// cluster-scoped; its name is the pool's name.
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPPoolSpec `json:"spec"`
}

// IPPoolSpec is what a pool covers.
type IPPoolSpec struct {
	// CIDR is the pool's range, a network address (no host bits set).
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of the blocks nodes claim: 20..32 for
	// IPv4, 116..128 for IPv6, no shorter than CIDR's. 0 means 26 or 122.
	BlockSize int `json:"blockSize,omitempty"`
}

// IPPoolList is a list of pools.
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}

// IPAMBlock is one block of a pool as claimed by a node, with the addresses
// handed out of it. It is cluster-scoped and named after its CIDR
// (10.244.0.0/26 is 10-244-0-0-26; see ipam/kubestore), so that one CIDR can
// never be claimed twice. Every write is a compare-and-swap on its
// resourceVersion.
//
// Affinity lives in the block itself rather than in a separate object: a node
// claims a block by creating it with its first allocation in it, one atomic
// write.
type IPAMBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPAMBlockSpec `json:"spec"`
}

// IPAMBlockSpec is a block's owner and allocations. Field names are short on
// purpose: a cluster holds thousands of blocks of up to 4096 allocations.
type IPAMBlockSpec struct {
	CIDR string `json:"cidr"`
	// Affinity is the node that claimed the block; empty when its node is gone
	// and other nodes still hold addresses borrowed from it.
	Affinity string `json:"affinity,omitempty"`
	// EmptySince is when the block lost its last allocation; unset in use.
	EmptySince *time.Time `json:"emptySince,omitempty"`
	// Allocations are sorted by address.
	Allocations []IPAMAllocation `json:"allocations,omitempty"`
}

// IPAMAllocation is one address held by one handle.
type IPAMAllocation struct {
	Address string `json:"address"`
	// Handle is the CNI container ID and interface name, "<id>/<ifname>".
	Handle    string `json:"handle"`
	Node      string `json:"node"`
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	// Allocated keeps sub-second precision (RFC 3339 with nanoseconds).
	Allocated time.Time `json:"allocated"`
}

// IPAMBlockList is a list of blocks.
type IPAMBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMBlock `json:"items"`
}

// BGPPeer is an explicit BGP neighbour (a top-of-rack router, a route
// reflector) of some or all nodes. It is cluster-scoped.
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec describes the session; zero values mean the bgp package's
// defaults (see bgp.Peer).
type BGPPeerSpec struct {
	// Address is the peer's IP address.
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	Port    uint16 `json:"port,omitempty"`
	// Node limits the peer to one node, by name.
	Node string `json:"node,omitempty"`
	// NodeSelector limits the peer to the nodes whose labels match. Neither
	// Node nor NodeSelector: every node peers.
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	Password     *BGPPassword          `json:"password,omitempty"`
	// Multihop is the TTL of an eBGP session to a peer that is not directly
	// connected; 0 means directly connected.
	Multihop uint8 `json:"multihop,omitempty"`
	// HoldTime and KeepaliveInterval are whole seconds.
	HoldTime             *metav1.Duration `json:"holdTime,omitempty"`
	KeepaliveInterval    *metav1.Duration `json:"keepaliveInterval,omitempty"`
	Passive              bool             `json:"passive,omitempty"`
	RouteReflectorClient bool             `json:"routeReflectorClient,omitempty"`
	Import               *BGPImport       `json:"import,omitempty"`
	// MaxPrefixes per address family; 0 means no limit.
	MaxPrefixes uint32  `json:"maxPrefixes,omitempty"`
	BFD         *BGPBFD `json:"bfd,omitempty"`
}

// BGPPassword is the session's TCP MD5 password: a plain value, or a key of
// the Secret flatnet-bgp-passwords that the DaemonSet mounts into the agent.
// The agent reads that file; it has no access to the Secrets API.
type BGPPassword struct {
	Value     string `json:"value,omitempty"`
	SecretKey string `json:"secretKey,omitempty"`
}

// BGPImport says which prefixes the peer may announce to us.
type BGPImport struct {
	// Allow lists the accepted prefixes (each with every more specific one);
	// empty means the pod pools.
	Allow        []string `json:"allow,omitempty"`
	AllowDefault bool     `json:"allowDefault,omitempty"`
}

// BGPBFD turns on BFD for the session.
type BGPBFD struct {
	Interval   *metav1.Duration `json:"interval,omitempty"`
	Multiplier uint32           `json:"multiplier,omitempty"`
}

// BGPPeerList is a list of peers.
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
