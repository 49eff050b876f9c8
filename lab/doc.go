// Package lab realizes containerlab topology files (lab/topology) on one
// machine with network namespaces: each node a namespace, each link a veth
// pair, `exec` lines run inside the node, routers run FRR or BIRD with their
// bound configuration (lab/router), flatnet nodes run flatnet-agent, and pods
// are attached to flatnet nodes through the CNI plugin with libcni
// (lab/cniruntime), as a container runtime does. With the kubernetes
// datastore it runs a control plane of its own (lab/controlplane). Its Report
// shows a person the BGP sessions, the learned routes and measured
// connectivity.
//
// It is what `flatnet-lab` runs and what the end-to-end tests drive. It must
// never touch anything outside the namespaces, processes and state directory
// it made, and must not import testing.
package lab
