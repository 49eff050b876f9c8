package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
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
	errs = append(errs, c.IPAM.validate()...)
	return errors.Join(errs...)
}

// invalid returns the error for key holding value: "log.level "verbose": why".
func invalid(key string, value any, why string, args ...any) error {
	if s, ok := value.(string); ok {
		value = fmt.Sprintf("%q", s)
	}
	return fmt.Errorf("%s %v: %s", key, value, fmt.Sprintf(why, args...))
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
	case "kubernetes":
		errs = append(errs, invalid("datastore.type", d.Type, "not supported yet; use \"file\""))
	default:
		errs = append(errs, invalid("datastore.type", d.Type, "unknown datastore type; use \"file\""))
	}
	if !filepath.IsAbs(d.File.Dir) {
		errs = append(errs, invalid("datastore.file.dir", d.File.Dir, "must be an absolute path"))
	}
	return errs
}

func (ip IPAM) validate() []error {
	var errs []error
	if len(ip.Pools) == 0 {
		errs = append(errs, invalid("ipam.pools", ip.Pools, "at least one pool is required"))
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

	size, family, lo, hi := p.BlockSize, "IPv4", 20, 32
	if cidr.Addr().Is6() {
		family, lo, hi = "IPv6", 116, 128
	}
	shown := fmt.Sprint(size)
	if size == 0 {
		size = defaultBlockSize(cidr)
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
