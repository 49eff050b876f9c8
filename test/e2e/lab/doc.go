// Package lab holds flatnet's end-to-end tests and benchmarks on the lab
// topologies of test/topologies: each test brings a topology up with the lab
// (package github.com/flatnet-io/flatnet/lab: network namespaces, the real
// flatnet-agent, CNI plugin, FRR and BIRD),
// attaches pods through the CNI plugin, proves the network model with
// `flatnetctl verify`, then deletes pods, fills blocks, restarts an agent
// under traffic and stops a node, and shows that tearing down leaves nothing.
//
// Every run names its namespaces flabt<pid>-<n>-<topology>- and keeps its state
// under the test's temporary directory, so it never touches a lab that
// `make lab` (namespaces flab-<topology>-) or another test run brought up;
// TestMain sweeps what runs that died left behind. The package holds tests
// only: it must not grow code that other packages import.
package lab
