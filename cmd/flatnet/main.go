// Command flatnet is flatnet's CNI plugin, executed by the container runtime for
// every pod. This build answers VERSION; wiring pods (ADD, DEL, CHECK, GC, STATUS)
// comes with the CNI work and is refused with a CNI error until then.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// errNotImplemented is a plugin-specific CNI error code (100 and up are ours).
const errNotImplemented = 100

func notYet(*skel.CmdArgs) error {
	return types.NewError(errNotImplemented, "not implemented", "this flatnet build does not wire pods yet")
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: notYet, Del: notYet, Check: notYet, GC: notYet, Status: notYet},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "flatnet: BGP-routed pod networking")
}
