// Package ipam owns flatnet's address management: pools split into blocks, blocks
// claimed by nodes with affinity, and pod addresses handed out of them against a
// handle (the CNI container ID and interface name).
//
// The Allocator is pure logic over a Store, whose only promise is compare-and-swap
// on a per-block revision; that promise is what keeps an address from ever being
// handed out twice when many nodes allocate at once. The package must not know how
// a Store keeps its data (files, the Kubernetes API), nor anything about CNI, gRPC
// or BGP: callers translate those into Requests.
package ipam
