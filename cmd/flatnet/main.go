// Command flatnet is flatnet's CNI plugin, executed by the container runtime for
// every pod: it wires the pod into the node's routing with a veth pair and gets
// the pod's addresses from the node's flatnet agent.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/flatnet-io/flatnet/cni"
)

// version is stamped by the build: -ldflags "-X main.version=...".
var version = "dev"

func init() {
	// Namespace switches are per OS thread: keep main on one.
	runtime.LockOSThread()
}

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.SupportedVersions, "flatnet "+version+": BGP-routed pod networking, no bridge, no NAT")
}
