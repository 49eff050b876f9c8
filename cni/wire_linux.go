package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flatnet-io/flatnet/wellknown"
)

// wired is what wire made.
type wired struct {
	hostName string
	hostMAC  net.HardwareAddr
	podName  string
	podMAC   net.HardwareAddr
}

// ifNameFree fails when the pod already has an interface by that name.
func ifNameFree(podNS ns.NetNS, ifName string) error {
	err := podNS.Do(func(ns.NetNS) error {
		_, err := netlinksafe.LinkByName(ifName)
		return err
	})
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil:
		return types.NewError(types.ErrInvalidEnvironmentVariables, "interface already exists",
			fmt.Sprintf("CNI_IFNAME %q already exists in %s", ifName, podNS.Path()))
	case errors.As(err, &notFound):
		return nil
	}
	return ioError("look up the pod's interface", err)
}

// wire creates the veth pair with its pod end born in the pod's namespace and
// routes the pod's addresses through it. On failure it removes what it made;
// undo removes everything once it has succeeded.
func wire(podNS ns.NetNS, hostName, ifName string, mtu int, addrs []podAddr) (w wired, undo func(), err error) {
	// A host end by this name belongs to this very attachment: an ADD retried
	// after a crash. Start again from nothing.
	if stale, err := netlinksafe.LinkByName(hostName); err == nil {
		if err := netlink.LinkDel(stale); err != nil {
			return w, nil, ioError("remove a stale veth", err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: mtu},
		PeerName:      ifName,
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(podNS.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return w, nil, ioError("create veth", fmt.Errorf("%s/%s (mtu %d): %w", hostName, ifName, mtu, err))
	}
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return w, nil, ioError("find the new veth", err)
	}
	// Deleting the host end takes the pod end and every route through it along.
	remove := func() { _ = netlink.LinkDel(host) }
	defer func() {
		if err != nil {
			remove()
		}
	}()
	w = wired{hostName: hostName, hostMAC: host.Attrs().HardwareAddr, podName: ifName}

	if err := configureHost(host, addrs); err != nil {
		return w, nil, err
	}
	if w.podMAC, err = configurePod(podNS, ifName, w.hostMAC, addrs); err != nil {
		return w, nil, err
	}
	for _, a := range addrs {
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(a.prefix), Protocol: wellknown.RouteProtocol}
		if a.prefix.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		// RouteAdd, not replace: a route to this address through another veth
		// means the address is in use, and taking it over would hide that.
		if err := netlink.RouteAdd(r); err != nil {
			return w, nil, ioError("add the host route", fmt.Errorf("%s dev %s: %w", a.prefix, hostName, err))
		}
	}
	return w, remove, nil
}

// configureHost brings the host end up and makes the node route for pods.
func configureHost(host netlink.Link, addrs []podAddr) error {
	name := host.Attrs().Name
	var settings [][2]string
	for _, a := range addrs {
		if a.prefix.Addr().Is4() {
			settings = append(settings,
				[2]string{"net/ipv4/ip_forward", "1"},
				// Answers the pod's ARP for the gateway should its static entry go.
				[2]string{"net/ipv4/conf/" + name + "/proxy_arp", "1"},
				[2]string{"net/ipv4/neigh/" + name + "/proxy_delay", "0"})
		} else {
			settings = append(settings, [2]string{"net/ipv6/conf/all/forwarding", "1"})
		}
	}
	for _, s := range settings {
		if cur, err := sysctl.Sysctl(s[0]); err == nil && cur == s[1] {
			continue
		}
		if _, err := sysctl.Sysctl(s[0], s[1]); err != nil {
			return ioError("set sysctl", fmt.Errorf("%s=%s: %w", s[0], s[1], err))
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return ioError("bring the host veth up", err)
	}
	for _, a := range addrs {
		if a.prefix.Addr().Is6() {
			// The host end owns the pods' IPv6 gateway, so it answers for it.
			gw := &netlink.Addr{IPNet: &net.IPNet{IP: a.gateway.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(host, gw); err != nil && !errors.Is(err, unix.EEXIST) {
				return ioError("add the IPv6 gateway to the host veth", err)
			}
		}
	}
	return nil
}

// configurePod gives the pod its addresses, a default route per family through
// the link-local gateway, and a permanent neighbour entry for the gateway, so
// the pod never waits on ARP or DAD.
func configurePod(podNS ns.NetNS, ifName string, hostMAC net.HardwareAddr, addrs []podAddr) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := podNS.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			return ioError("bring lo up in the pod", err)
		}
		link, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return ioError("find the pod's veth", err)
		}
		mac = link.Attrs().HardwareAddr
		for _, a := range addrs {
			if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(a.prefix), Flags: unix.IFA_F_NODAD}); err != nil {
				return ioError("add the pod's address", fmt.Errorf("%s: %w", a.prefix, err))
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return ioError("bring the pod's veth up", err)
		}
		idx := link.Attrs().Index
		for _, a := range addrs {
			family, gw := unix.AF_INET6, a.gateway.AsSlice()
			if a.prefix.Addr().Is4() {
				family = unix.AF_INET
				onLink := &netlink.Route{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(a.gateway, 32)), Scope: netlink.SCOPE_LINK}
				if err := netlink.RouteAdd(onLink); err != nil {
					return ioError("add the route to the gateway", err)
				}
			}
			neigh := &netlink.Neigh{LinkIndex: idx, Family: family, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: hostMAC}
			if err := netlink.NeighSet(neigh); err != nil {
				return ioError("add the gateway's neighbour entry", err)
			}
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: defaultRoute(a.prefix.Addr()), Gw: gw}); err != nil {
				return ioError("add the default route", fmt.Errorf("via %s: %w", a.gateway, err))
			}
		}
		return nil
	})
	return mac, err
}

// unwire removes an attachment's veth, and with it the pod end and the routes
// through it. A veth that is already gone is not an error.
func unwire(hostName string) error {
	link, err := netlinksafe.LinkByName(hostName)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(link)
	}
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return ioError("remove the veth", fmt.Errorf("%s: %w", hostName, err))
	}
	return nil
}

// removeStaleVeths deletes every flatnet host veth not named in keep.
func removeStaleVeths(keep map[string]bool) error {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return ioError("list links", err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "veth" || !strings.HasPrefix(name, wellknown.HostVethPrefix) || len(name) != 15 || keep[name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return ioError("remove stale veths", errors.Join(errs...))
	}
	return nil
}

// checkWiring lists how the kernel differs from prev.
func checkWiring(podNS ns.NetNS, hostName, ifName string, prev *current.Result) []string {
	var problems []string
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		problems = append(problems, fmt.Sprintf("host veth %s: %v", hostName, err))
	} else if host.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("host veth %s is down", hostName))
	}
	err = podNS.Do(func(ns.NetNS) error {
		// Not ip.ValidateExpectedInterfaceIPs: it wants a subnet route for each
		// address, and a /32 has none.
		problems = append(problems, podAddrProblems(ifName, prev.IPs)...)
		if err := ip.ValidateExpectedRoute(prev.Routes); err != nil {
			problems = append(problems, "pod: "+err.Error())
		}
		return nil
	})
	if err != nil {
		problems = append(problems, fmt.Sprintf("enter %s: %v", podNS.Path(), err))
	}
	if host == nil {
		return problems
	}
	for _, ipc := range prev.IPs {
		family, bits := unix.AF_INET6, 128
		if ipc.Address.IP.To4() != nil {
			family, bits = unix.AF_INET, 32
		}
		dst := &net.IPNet{IP: ipc.Address.IP, Mask: net.CIDRMask(bits, bits)}
		routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Dst: dst, LinkIndex: host.Attrs().Index}, netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err != nil || len(routes) == 0 || routes[0].Protocol != wellknown.RouteProtocol {
			problems = append(problems, fmt.Sprintf("no flatnet host route to %s via %s", dst, hostName))
		}
	}
	return problems
}

// podAddrProblems lists the addresses of ips that the pod's interface lacks.
func podAddrProblems(ifName string, ips []*current.IPConfig) []string {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return []string{fmt.Sprintf("pod: interface %s: %v", ifName, err)}
	}
	have, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return []string{fmt.Sprintf("pod: addresses of %s: %v", ifName, err)}
	}
	var problems []string
	for _, ipc := range ips {
		if !slices.ContainsFunc(have, func(a netlink.Addr) bool { return a.IPNet.String() == ipc.Address.String() }) {
			problems = append(problems, fmt.Sprintf("pod: %s lacks address %s", ifName, ipc.Address.String()))
		}
	}
	return problems
}

// uplinkMTU is the MTU of the device of the node's default route, or 1500.
func uplinkMTU() int {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
		if err != nil {
			continue
		}
		for _, r := range routes {
			if r.LinkIndex == 0 {
				continue
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
				return l.Attrs().MTU
			}
		}
	}
	return 1500
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func defaultRoute(a netip.Addr) *net.IPNet {
	if a.Is4() {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}
