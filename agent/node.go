package agent

import (
	"errors"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/wellknown"
)

// nodeIdentity is the node as its peers see it: its name, ASN, and its
// addresses from config or, when unset, found from its routes.
func nodeIdentity(cfg config.Config) (mesh.Node, error) {
	n := mesh.Node{Name: cfg.NodeName, ASN: cfg.BGP.ASN, IPv4: cfg.BGP.NodeIPv4, IPv6: cfg.BGP.NodeIPv6}
	if !n.IPv4.IsValid() {
		n.IPv4 = detectAddr(netlink.FAMILY_V4)
	}
	if !n.IPv6.IsValid() {
		n.IPv6 = detectAddr(netlink.FAMILY_V6)
	}
	if !n.IPv4.IsValid() && !cfg.BGP.RouterID.IsValid() {
		return n, errors.New("bgp: no IPv4 address for the router ID: set bgp.nodeIPv4 or bgp.routerID")
	}
	if !n.IPv4.IsValid() && !n.IPv6.IsValid() {
		return n, errors.New("bgp: the node has no address to announce as next hop: set bgp.nodeIPv4 or bgp.nodeIPv6")
	}
	return n, nil
}

// detectAddr returns the node's address of a family: the source address of
// its default route, else its first global address outside pod veths.
func detectAddr(family int) netip.Addr {
	routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
	if err == nil {
		for _, r := range routes {
			if r.Src != nil {
				if a, ok := netip.AddrFromSlice(r.Src); ok {
					return a.Unmap()
				}
			}
			if r.LinkIndex > 0 {
				if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
					if a := firstGlobal(l, family); a.IsValid() {
						return a
					}
				}
			}
		}
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return netip.Addr{}
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, wellknown.HostVethPrefix) {
			continue
		}
		if a := firstGlobal(l, family); a.IsValid() {
			return a
		}
	}
	return netip.Addr{}
}

func firstGlobal(l netlink.Link, family int) netip.Addr {
	addrs, err := netlinksafe.AddrList(l, family)
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().IsGlobalUnicast() && a.Scope == int(netlink.SCOPE_UNIVERSE) {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// speakerConfig turns the agent's config into the speaker's; pools are the
// allocator's.
func speakerConfig(cfg config.Config, self mesh.Node, pools []ipam.Pool) bgp.Config {
	c := cfg.BGP.Speaker()
	if !c.RouterID.IsValid() {
		c.RouterID = self.IPv4
	}
	for _, p := range pools {
		c.Pools = append(c.Pools, p.CIDR)
	}
	return c
}
