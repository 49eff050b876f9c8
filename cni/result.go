package cni

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// newResult reports the attachment: the host end first (no sandbox), the pod end
// second, each address on the pod end with its gateway, a default route per
// family, and the configuration's DNS passed through.
func newResult(conf *NetConf, w wired, netns string, addrs []podAddr) *current.Result {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: w.hostName, Mac: w.hostMAC.String()},
			{Name: w.podName, Mac: w.podMAC.String(), Sandbox: netns},
		},
		DNS: conf.DNS,
	}
	for _, a := range addrs {
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   *ipNet(a.prefix),
			Gateway:   net.IP(a.gateway.AsSlice()),
		})
		r.Routes = append(r.Routes, &types.Route{Dst: *defaultRoute(a.prefix.Addr()), GW: net.IP(a.gateway.AsSlice())})
	}
	return r
}
