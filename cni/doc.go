// Package cni is flatnet's CNI plugin: it wires a pod into the node's routing
// with a veth pair and no bridge — the pod's address as a /32 (/128) on its
// interface, a default route through a link-local gateway, and a host route to
// the pod through the host end of the veth — and gets the pod's addresses from
// the node's flatnet agent over its unix socket.
//
// It implements the CNI 1.1 verbs exactly as the specification says, because
// runtimes call it through libcni and trust what it returns: errors are CNI error
// objects with the spec's codes, a failed ADD leaves nothing behind, DEL is
// idempotent and best effort. It must not allocate addresses itself (the agent
// does) nor touch routes that are not its own pods'.
package cni
