package cni

import (
	"crypto/sha256"
	"encoding/hex"
)

// hostVethPrefix starts every host-side veth flatnet makes; GC removes the ones
// no valid attachment accounts for.
const hostVethPrefix = "fln"

// HostVethName is the host end of an attachment's veth: the prefix and 12 hex
// digits of a hash of the container ID and interface name, 15 characters, the
// kernel's limit. DEL and GC find it again from the CNI arguments alone.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return hostVethPrefix + hex.EncodeToString(sum[:6])
}

// handle names an attachment's addresses in IPAM.
func handle(containerID, ifName string) string { return containerID + "/" + ifName }
