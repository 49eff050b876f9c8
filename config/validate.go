package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"time"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/ipam"
)

// Kubernetes' naming rules (k8s.io/apimachinery/pkg/util/validation).
var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

const (
	maxLabelLen     = 63
	maxSubdomainLen = 253
	sunPathLen      = 108 // sizeof(sockaddr_un.sun_path) on Linux, NUL included
)

// Validate checks every setting and returns all the problems it finds, joined
// with errors.Join. Each names the key as the file spells it
// ("ipam.pools[1].cidr") and the offending value. A pool's BlockSize of 0 is
// valid: it stands for the family default.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, validateNodeName(c.NodeName)...)
	errs = append(errs, c.Log.validate()...)
	errs = append(errs, c.API.validate()...)
	errs = append(errs, c.Datastore.validate()...)
	if a := c.Health.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, invalid("health.address", a, "want host:port, such as 127.0.0.1:9797, or empty for none"))
		}
	}
	// The kubernetes datastore has pools of its own, IPPool objects: the
	// agent checks at start that there is at least one pool in all.
	errs = append(errs, c.IPAM.validate(c.Datastore.Type != "kubernetes")...)
	errs = append(errs, c.BGP.validate()...)
	errs = append(errs, c.Policy.validate(c.Datastore.Type)...)
	return errors.Join(errs...)
}

// invalid returns the error for key holding value: "log.level "verbose": why".
func invalid(key string, value any, why string, args ...any) error {
	return fmt.Errorf("%s %s: %s", key, shown(value), fmt.Sprintf(why, args...))
}

func validateNodeName(name string) []error {
	const key = "nodeName"
	switch {
	case name == "":
		return []error{invalid(key, name, "must be set (file, FLATNET_NODENAME, NODE_NAME or --node-name)")}
	case len(name) > maxSubdomainLen:
		return []error{invalid(key, name, "is %d characters long, at most %d allowed", len(name), maxSubdomainLen)}
	case !dns1123Subdomain.MatchString(name):
		return []error{invalid(key, name, "must be a lowercase RFC 1123 subdomain: a-z, 0-9, '-' and '.', starting and ending with a letter or digit")}
	}
	return nil
}

func (l Log) validate() []error {
	var errs []error
	if _, ok := logLevels[l.Level]; !ok {
		errs = append(errs, invalid("log.level", l.Level, "want debug, info, warn or error"))
	}
	if l.Format != "text" && l.Format != "json" {
		errs = append(errs, invalid("log.format", l.Format, "want text or json"))
	}
	return errs
}

func (a API) validate() []error {
	const key = "api.socket"
	switch {
	case !filepath.IsAbs(a.Socket):
		return []error{invalid(key, a.Socket, "must be an absolute path")}
	case len(a.Socket) >= sunPathLen:
		return []error{invalid(key, a.Socket, "is %d bytes long; a unix socket path must be shorter than %d", len(a.Socket), sunPathLen)}
	}
	return nil
}

func (d Datastore) validate() []error {
	var errs []error
	switch d.Type {
	case "file":
		if !filepath.IsAbs(d.File.Dir) {
			errs = append(errs, invalid("datastore.file.dir", d.File.Dir, "must be an absolute path"))
		}
	case "kubernetes":
		if k := d.Kubernetes.Kubeconfig; k != "" && !filepath.IsAbs(k) {
			errs = append(errs, invalid("datastore.kubernetes.kubeconfig", k, "must be an absolute path, or empty for in-cluster"))
		}
		if d.Kubernetes.GCGrace < 0 {
			errs = append(errs, invalid("datastore.kubernetes.gcGrace", d.Kubernetes.GCGrace, "must not be negative"))
		}
		if d.Kubernetes.GCInterval < 0 {
			errs = append(errs, invalid("datastore.kubernetes.gcInterval", d.Kubernetes.GCInterval, "must not be negative"))
		}
		if p := d.Kubernetes.BGPPasswordsDir; !filepath.IsAbs(p) {
			errs = append(errs, invalid("datastore.kubernetes.bgpPasswordsDir", p, "must be an absolute path"))
		}
	default:
		errs = append(errs, invalid("datastore.type", d.Type, "unknown datastore type; use \"file\" or \"kubernetes\""))
	}
	return errs
}

// validate checks ip; requirePool says whether ipam.pools must list one.
func (ip IPAM) validate(requirePool bool) []error {
	var errs []error
	if requirePool && len(ip.Pools) == 0 {
		errs = append(errs, invalid("ipam.pools", ip.Pools, "at least one pool is required"))
	}
	if len(ip.Pools) > ipam.MaxPools {
		// Each pool is checked against every other: not for this many.
		return append(errs, fmt.Errorf("ipam.pools: %d pools, at most %d allowed", len(ip.Pools), ipam.MaxPools))
	}
	names := map[string]int{} // pool name -> index of its first use
	for i, p := range ip.Pools {
		key := fmt.Sprintf("ipam.pools[%d]", i)
		errs = append(errs, p.validate(key)...)
		if first, dup := names[p.Name]; dup && p.Name != "" {
			errs = append(errs, invalid(key+".name", p.Name, "already names ipam.pools[%d]", first))
		} else {
			names[p.Name] = i
		}
		for j, q := range ip.Pools[:i] {
			if p.CIDR.IsValid() && q.CIDR.IsValid() && p.CIDR.Overlaps(q.CIDR) {
				errs = append(errs, fmt.Errorf("%s.cidr %s overlaps ipam.pools[%d].cidr %s", key, p.CIDR, j, q.CIDR))
			}
		}
	}
	if ip.BlockReleaseGrace < 0 {
		errs = append(errs, invalid("ipam.blockReleaseGrace", ip.BlockReleaseGrace, "must not be negative"))
	}
	errs = append(errs, validateGateway("ipam.gatewayIPv4", ip.GatewayIPv4, true)...)
	errs = append(errs, validateGateway("ipam.gatewayIPv6", ip.GatewayIPv6, false)...)
	return errs
}

// validate checks p, which is at key ("ipam.pools[0]").
func (p Pool) validate(key string) []error {
	var errs []error
	switch {
	case p.Name == "":
		errs = append(errs, invalid(key+".name", p.Name, "must be set"))
	case len(p.Name) > maxLabelLen || !dns1123Label.MatchString(p.Name):
		errs = append(errs, invalid(key+".name", p.Name, "must be a DNS-1123 label: at most %d characters of a-z, 0-9 and '-', starting and ending with a letter or digit", maxLabelLen))
	}

	cidr := p.CIDR
	switch {
	case !cidr.IsValid():
		return append(errs, fmt.Errorf("%s.cidr: must be set", key))
	case cidr.Addr().Is4In6():
		return append(errs, invalid(key+".cidr", cidr, "is an IPv4-mapped IPv6 prefix; write an IPv4 pool in IPv4 form"))
	case cidr.Masked() != cidr:
		errs = append(errs, invalid(key+".cidr", cidr, "has host bits set; did you mean %s?", cidr.Masked()))
	}

	fam := ipam.FamilyOf(cidr.Addr())
	size, family := p.BlockSize, "IPv4"
	if fam == ipam.IPv6 {
		family = "IPv6"
	}
	lo, hi := ipam.BlockSizes(fam)
	shown := fmt.Sprint(size)
	if size == 0 {
		size = ipam.DefaultBlockSize(fam)
		shown = fmt.Sprintf("%d (the %s default)", size, family)
	}
	switch {
	case size < lo || size > hi:
		errs = append(errs, fmt.Errorf("%s.blockSize %s: out of range for an %s pool, want %d..%d", key, shown, family, lo, hi))
	case size < cidr.Bits():
		errs = append(errs, fmt.Errorf("%s.blockSize %s: block size %d does not fit in pool %s", key, shown, size, cidr.Masked()))
	}
	return errs
}

// validateGateway checks the pods' default gateway at key: a link-local
// unicast address of the family ipv4 says.
func validateGateway(key string, gw netip.Addr, ipv4 bool) []error {
	switch {
	case !gw.IsValid():
		return []error{fmt.Errorf("%s: must be set", key)}
	case ipv4 && !gw.Is4():
		return []error{invalid(key, gw, "must be an IPv4 address")}
	case !ipv4 && (!gw.Is6() || gw.Is4In6()):
		return []error{invalid(key, gw, "must be an IPv6 address")}
	case gw.Zone() != "":
		return []error{invalid(key, gw, "must not have a zone")}
	case ipv4 && !gw.IsLinkLocalUnicast():
		return []error{invalid(key, gw, "must be link-local, in 169.254.0.0/16")}
	case !gw.IsLinkLocalUnicast():
		return []error{invalid(key, gw, "must be link-local unicast, in fe80::/10")}
	}
	return nil
}

// fieldErrs turns the bgp package's rule violations into errors under key
// ("bgp.peers[0]"): "bgp.peers[0].bfd.interval 10µs: want ...".
func fieldErrs(key string, fes []bgp.FieldError) []error {
	errs := make([]error, len(fes))
	for i, fe := range fes {
		fe.Field = key + "." + fe.Field
		errs[i] = fe
	}
	return errs
}

func (b BGP) validate() []error {
	var errs []error
	errs = append(errs, fieldErrs("bgp", bgp.CheckASN("asn", b.ASN))...)
	if id := b.RouterID; id.IsValid() {
		errs = append(errs, fieldErrs("bgp", bgp.CheckIPv4ID("routerID", id))...)
	}
	if a := b.NodeIPv4; a.IsValid() && (!a.Is4() || a.IsUnspecified() || a.IsMulticast()) {
		errs = append(errs, invalid("bgp.nodeIPv4", a, "must be a unicast IPv4 address"))
	}
	if a := b.NodeIPv6; a.IsValid() && (!a.Is6() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "") {
		errs = append(errs, invalid("bgp.nodeIPv6", a, "must be a unicast IPv6 address without zone"))
	}
	errs = append(errs, fieldErrs("bgp", bgp.CheckPassword("meshPassword", b.MeshPassword))...)
	errs = append(errs, fieldErrs("bgp", bgp.CheckPasswordWithAPI("meshPassword", b.MeshPassword, b.APIListen))...)
	errs = append(errs, fieldErrs("bgp", bgp.CheckTimers("meshHoldTime", "meshKeepaliveInterval", b.MeshHoldTime, b.MeshKeepaliveInterval))...)
	if m := b.MeshBFD.Multiplier; b.MeshBFD.Enabled && m < 0 {
		errs = append(errs, invalid("bgp.meshBFD.multiplier", m, "want 1..255, or 0 for %d", bgp.DefaultBFDMultiplier))
	} else {
		errs = append(errs, fieldErrs("bgp", bgp.CheckBFD("meshBFD", b.MeshBFD.bgp()))...)
	}
	seen := map[netip.Addr]int{}
	for i, a := range b.ListenAddresses {
		key := fmt.Sprintf("bgp.listenAddresses[%d]", i)
		switch first, dup := seen[a]; {
		case !a.IsValid() || a.Is4In6():
			errs = append(errs, invalid(key, a, "must be an IPv4 or IPv6 address"))
		case dup:
			errs = append(errs, invalid(key, a, "already listed as bgp.listenAddresses[%d]", first))
		default:
			seen[a] = i
		}
	}
	// Zero stands for a default in package bgp; here the defaults are
	// filled in already (Default), so a zero was written on purpose.
	if b.ListenPort != -1 && (b.ListenPort < 1 || b.ListenPort > 65535) {
		errs = append(errs, invalid("bgp.listenPort", b.ListenPort, "want 1..65535, or -1 not to listen"))
	}
	if b.ConvergeTimeout < time.Second {
		errs = append(errs, invalid("bgp.convergeTimeout", b.ConvergeTimeout, "must be at least 1s"))
	}
	if t := b.GracefulRestart.RestartTime; t < time.Second {
		errs = append(errs, invalid("bgp.gracefulRestart.restartTime", t, "want whole seconds in 1s..%v", bgp.MaxRestartTime))
	} else {
		errs = append(errs, fieldErrs("bgp", bgp.CheckRestartTime("gracefulRestart.restartTime", t))...)
	}
	if b.APIListen != "" {
		errs = append(errs, fieldErrs("bgp", bgp.CheckAPIListen("apiListen", b.APIListen))...)
	}
	if id := b.RouteReflector.ClusterID; id.IsValid() {
		errs = append(errs, fieldErrs("bgp", bgp.CheckIPv4ID("routeReflector.clusterID", id))...)
	}
	names, addrs := map[string]int{}, map[netip.Addr]int{}
	for i, p := range b.Peers {
		key := fmt.Sprintf("bgp.peers[%d]", i)
		errs = append(errs, p.validate(key, b)...)
		if first, dup := names[p.Name]; dup && p.Name != "" {
			errs = append(errs, invalid(key+".name", p.Name, "already names bgp.peers[%d]", first))
		} else {
			names[p.Name] = i
		}
		if first, dup := addrs[p.Address]; dup && p.Address.IsValid() {
			errs = append(errs, invalid(key+".address", p.Address, "already the address of bgp.peers[%d]", first))
		} else {
			addrs[p.Address] = i
		}
	}
	return errs
}

// validate checks p, which is at key ("bgp.peers[0]") in b: that its name is
// a DNS label and its numbers fit bgp.Peer's fields here, the rules of a
// peer in package bgp.
func (p Peer) validate(key string, b BGP) []error {
	var errs []error
	if p.Name != "" && (len(p.Name) > maxLabelLen || !dns1123Label.MatchString(p.Name)) {
		errs = append(errs, invalid(key+".name", p.Name, "must be a DNS-1123 label: at most %d characters of a-z, 0-9 and '-', starting and ending with a letter or digit", maxLabelLen))
	}
	// A number that does not fit is reported here and left out of the rest.
	q := p
	if p.Port < 0 || p.Port > 65535 {
		errs, q.Port = append(errs, invalid(key+".port", p.Port, "want 1..65535, or 0 for 179")), 0
	}
	if p.Multihop < 0 || p.Multihop > 255 {
		errs, q.Multihop = append(errs, invalid(key+".multihop", p.Multihop, "want a TTL in 1..255, or 0 for directly connected")), 0
	}
	if m := p.BFD.Multiplier; m < 0 {
		errs, q.BFD.Multiplier = append(errs, invalid(key+".bfd.multiplier", m, "want 1..255, or 0 for %d", bgp.DefaultBFDMultiplier)), 0
	}
	return append(errs, fieldErrs(key, q.BGP().Check(b.Speaker()))...)
}

func (p Policy) validate(datastore string) []error {
	var errs []error
	if p.Enabled && datastore != "kubernetes" {
		errs = append(errs, invalid("policy.enabled", p.Enabled, "needs datastore.type kubernetes: NetworkPolicy comes from the API (with files there is no policy)"))
	}
	if p.Resync < time.Second {
		errs = append(errs, invalid("policy.resync", p.Resync, "want at least 1s"))
	}
	return errs
}
