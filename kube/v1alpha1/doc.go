// Package v1alpha1 holds the Go types of flatnet's custom resources, API group
// flatnet.io version v1alpha1 — IPPool, IPAMBlock and BGPPeer — as plain
// structs with JSON tags and hand-written deep copies, the scheme that
// registers them, and a REST client for them. The CRDs in deploy/crds are
// their schema; a test checks that the two agree.
//
// The package must not hold allocation or BGP logic: it converts these objects
// into the types of ipam and bgp (Pool, Peer) and nothing more. Talking to the
// API server on behalf of a feature is the feature's package's job
// (ipam/kubestore, bgp/mesh/kubemesh, ipam/kubegc), or package kube's for
// what the agent reads (IPPools, BGPPeers).
package v1alpha1
