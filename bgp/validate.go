package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// maxPasswordLen is TCP_MD5SIG_MAXKEYLEN on Linux.
const maxPasswordLen = 80

// Validate checks c and returns every problem it finds, joined.
func (c Config) Validate() error {
	var errs []error
	if c.ASN == 0 {
		errs = append(errs, errors.New("asn 0: must be set"))
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		errs = append(errs, fmt.Errorf("router id %v: must be an IPv4 address other than 0.0.0.0", c.RouterID))
	}
	for _, a := range c.ListenAddresses {
		if !a.IsValid() || a.Is4In6() {
			errs = append(errs, fmt.Errorf("listen address %v: must be an IPv4 or IPv6 address", a))
		}
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("listen port %d: want -1 (do not listen), 0 (179) or 1..65535", c.ListenPort))
	}
	for _, p := range c.Pools {
		if !p.IsValid() || p.Masked() != p {
			errs = append(errs, fmt.Errorf("pool %v: must be a prefix with no host bits set", p))
		}
	}
	if id := c.RouteReflector.ClusterID; id.IsValid() && !id.Is4() {
		errs = append(errs, fmt.Errorf("route reflector cluster id %v: must be an IPv4 address", id))
	}
	if t := c.GracefulRestart.RestartTime; t < 0 || t > 4095*time.Second || t%time.Second != 0 {
		errs = append(errs, fmt.Errorf("graceful restart time %v: want whole seconds, at most 4095s", t))
	}
	if c.ConvergeTimeout < 0 {
		errs = append(errs, fmt.Errorf("converge timeout %v: must not be negative", c.ConvergeTimeout))
	}
	if c.APIListen != "" {
		if err := ValidateAPIListen(c.APIListen); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ValidateAPIListen checks the address of GoBGP's gRPC API: host:port with a
// loopback IP address as host, so that the unauthenticated API is never
// reachable from the network.
func ValidateAPIListen(hostPort string) error {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("api listen %q: want host:port: %w", hostPort, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !addr.IsLoopback() {
		return fmt.Errorf("api listen %q: host must be a loopback IP address, such as 127.0.0.1 or ::1", hostPort)
	}
	if n, err := netip.ParseAddrPort(net.JoinHostPort(addr.String(), port)); err != nil || n.Port() == 0 {
		return fmt.Errorf("api listen %q: want a port in 1..65535", hostPort)
	}
	return nil
}

// ValidatePeers checks peers against the speaker configuration c and returns
// every problem it finds, joined. Names and addresses must be unique.
func ValidatePeers(c Config, peers []Peer) error {
	var errs []error
	names := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	for _, p := range peers {
		if err := p.validate(c); err != nil {
			errs = append(errs, fmt.Errorf("peer %q (%v): %w", p.Name, p.Address, err))
		}
		if names[p.Name] {
			errs = append(errs, fmt.Errorf("peer %q: name used twice", p.Name))
		}
		if addrs[p.Address] {
			errs = append(errs, fmt.Errorf("peer %q: address %v used twice", p.Name, p.Address))
		}
		names[p.Name], addrs[p.Address] = true, true
	}
	return errors.Join(errs...)
}

func (p Peer) validate(c Config) error {
	var errs []error
	if p.Name == "" {
		errs = append(errs, errors.New("name must be set"))
	}
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.Is4In6() || p.Address.Zone() != "" {
		errs = append(errs, errors.New("address must be an IPv4 or IPv6 address without zone"))
	}
	if p.ASN == 0 {
		errs = append(errs, errors.New("asn must be set"))
	}
	if len(p.Password) > maxPasswordLen {
		errs = append(errs, fmt.Errorf("password is %d bytes long, at most %d allowed", len(p.Password), maxPasswordLen))
	}
	if p.RRClient && !c.RouteReflector.Enabled {
		errs = append(errs, errors.New("route reflector client, but the route reflector is not enabled"))
	}
	if p.RRClient && p.ASN != c.ASN {
		errs = append(errs, fmt.Errorf("route reflector client with asn %d: must be an iBGP peer (asn %d)", p.ASN, c.ASN))
	}
	if h := p.HoldTime; h != 0 && (h < 3*time.Second || h > 65535*time.Second || h%time.Second != 0) {
		errs = append(errs, fmt.Errorf("hold time %v: want 0 or whole seconds in 3s..65535s", h))
	}
	hold := p.HoldTime
	if hold == 0 {
		hold = DefaultHoldTime
	}
	if k := p.KeepaliveInterval; k < 0 || k%time.Second != 0 || k >= hold {
		errs = append(errs, fmt.Errorf("keepalive interval %v: want 0 or whole seconds below the hold time %v", k, hold))
	}
	for _, a := range p.Import.Allow {
		if !a.IsValid() || a.Masked() != a {
			errs = append(errs, fmt.Errorf("import allow %v: must be a prefix with no host bits set", a))
		}
	}
	if b := p.BFD; b != nil {
		if b.Interval < 0 || b.Interval%time.Microsecond != 0 || b.Interval > time.Duration(1<<32-1)*time.Microsecond {
			errs = append(errs, fmt.Errorf("bfd interval %v: want 0 or whole microseconds", b.Interval))
		}
		if b.Multiplier > 255 {
			errs = append(errs, fmt.Errorf("bfd multiplier %d: want 0..255", b.Multiplier))
		}
	}
	return errors.Join(errs...)
}

// ValidateAdverts checks adverts: valid prefixes without host bits, each
// once, with a next hop of the prefix's family.
func ValidateAdverts(adverts []Advert) error {
	var errs []error
	seen := map[netip.Prefix]bool{}
	for _, a := range adverts {
		switch {
		case !a.Prefix.IsValid() || a.Prefix.Masked() != a.Prefix || a.Prefix.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("advert %v: must be a prefix with no host bits set", a.Prefix))
		case seen[a.Prefix]:
			errs = append(errs, fmt.Errorf("advert %v: prefix listed twice", a.Prefix))
		case !a.NextHop.IsValid() || a.NextHop.IsUnspecified() || a.NextHop.Is4() != a.Prefix.Addr().Is4() || a.NextHop.Is4In6():
			errs = append(errs, fmt.Errorf("advert %v: next hop %v must be an address of the prefix's family", a.Prefix, a.NextHop))
		}
		seen[a.Prefix] = true
	}
	return errors.Join(errs...)
}
