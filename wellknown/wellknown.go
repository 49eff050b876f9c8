// Package wellknown holds the values flatnet's processes must agree on without
// asking each other: the mark on the kernel objects flatnet owns (the route
// protocol, the host veth prefix) and where the agent listens. The agent, the
// CNI plugin and flatnetctl all read them from here.
//
// It is a leaf: it imports nothing, so linking it costs a binary nothing. It
// must not grow logic.
package wellknown

// RouteProtocol tags every route flatnet installs (rtm_protocol), so flatnet
// can tell its own routes from everyone else's: the agent's learned routes and
// blackholes, and the CNI plugin's pod routes. 75 is unassigned in
// /etc/iproute2/rt_protos.
const RouteProtocol = 75

// HostVethPrefix starts the name of every host-side veth flatnet makes.
const HostVethPrefix = "fln"

// AgentSocket is where the agent serves its API by default (api.socket), and
// where the CNI plugin and flatnetctl look for it.
const AgentSocket = "/run/flatnet/flatnet.sock"

// PolicyTable is the nftables table (family inet) in which the agent
// enforces NetworkPolicy, and which flatnetctl policy reads.
const PolicyTable = "flatnet-policy"
