package cni

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/flatnet-io/flatnet/wellknown"
)

// HostVethName is the host end of an attachment's veth: flatnet's prefix
// (wellknown.HostVethPrefix; GC removes the veths of that prefix no valid
// attachment accounts for) and 12 hex
// digits of a hash of the container ID and interface name, 15 characters, the
// kernel's limit. DEL and GC find it again from the CNI arguments alone.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return wellknown.HostVethPrefix + hex.EncodeToString(sum[:6])
}

// handle names an attachment's addresses in IPAM.
func handle(containerID, ifName string) string { return containerID + "/" + ifName }
