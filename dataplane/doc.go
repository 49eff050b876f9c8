// Package dataplane owns what flatnet writes into the node's kernel routing
// table. Today it only names flatnet's route protocol number, shared by the CNI
// plugin's pod routes; the route reconciler for BGP-learned routes lives here
// next. It must not decide what to route: BGP and IPAM decide, it programs.
package dataplane

// RouteProtocol tags every route flatnet installs (rtm_protocol), so flatnet can
// tell its routes from everyone else's and never touch the others. `ip route`
// shows it as "proto 75" (or "proto flatnet" once /etc/iproute2/rt_protos.d
// names it).
const RouteProtocol = 75
