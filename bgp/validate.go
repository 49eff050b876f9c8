package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// The rules of a speaker's settings and of a peer live here, once: the
// agent's configuration (package config) and the BGPPeer objects (package
// kube/v1alpha1, through ValidatePeers) call them and only add what is
// theirs, such as how a name is spelt in a file.

// Limits the rules below enforce.
const (
	MaxPasswordLen = 80         // TCP_MD5SIG_MAXKEYLEN on Linux
	MaxASN         = 4294967294 // 4294967295 is reserved (RFC 7300)
	ASTrans        = 23456      // AS_TRANS (RFC 6793), not an AS of its own
	MaxRestartTime = 4095 * time.Second
	MinBFDInterval = time.Millisecond
	MaxBFDInterval = time.Hour
)

// FieldError is a setting that breaks a rule. Field names it as the
// configuration file and the BGPPeer objects spell it ("bfd.interval",
// "import.allow[0]").
type FieldError struct {
	Field string
	Value any // shown after Field; nil shows none (unset, or a password)
	Why   string
}

// maxShownValue is how much of a value Error shows: more than any valid
// value needs. A value given as a 10 MB string must not become a 10 MB log
// line.
const maxShownValue = 128

func (e FieldError) Error() string {
	switch v := e.Value.(type) {
	case nil:
		return e.Field + ": " + e.Why
	case string:
		if len(v) > maxShownValue {
			return fmt.Sprintf("%s %q… (%d bytes): %s", e.Field, cutString(v, maxShownValue), len(v), e.Why)
		}
		return fmt.Sprintf("%s %q: %s", e.Field, v, e.Why)
	default:
		if s := fmt.Sprint(v); len(s) > maxShownValue {
			return fmt.Sprintf("%s %s… (%d bytes): %s", e.Field, cutString(s, maxShownValue), len(s), e.Why)
		}
		return fmt.Sprintf("%s %v: %s", e.Field, v, e.Why)
	}
}

// cutString returns at most the first n bytes of s, ending on a rune
// boundary.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func fieldErr(field string, value any, why string, args ...any) FieldError {
	return FieldError{Field: field, Value: value, Why: fmt.Sprintf(why, args...)}
}

// CheckASN checks an AS number at field.
func CheckASN(field string, asn uint32) []FieldError {
	switch {
	case asn == 0 || asn > MaxASN:
		return []FieldError{fieldErr(field, asn, "want 1..%d", uint32(MaxASN))}
	case asn == ASTrans:
		return []FieldError{fieldErr(field, asn, "is AS_TRANS, reserved for 2-byte AS speakers")}
	}
	return nil
}

// CheckPassword checks a TCP MD5 password at field; its value is not shown.
func CheckPassword(field, password string) []FieldError {
	if len(password) > MaxPasswordLen {
		return []FieldError{fieldErr(field, nil, "is %d bytes long, at most %d allowed", len(password), MaxPasswordLen)}
	}
	return nil
}

// CheckTimers checks a session's hold time and keepalive interval, at the
// fields named: whole seconds, the hold time 3s..65535s, the keepalive
// below it; 0 means 90s and a third of the hold time.
func CheckTimers(holdField, keepaliveField string, hold, keepalive time.Duration) []FieldError {
	var errs []FieldError
	if hold == 0 {
		hold = DefaultHoldTime
	} else if hold < 3*time.Second || hold > 65535*time.Second || hold%time.Second != 0 {
		errs = append(errs, fieldErr(holdField, hold, "want whole seconds in 3s..65535s, or 0 for %v", DefaultHoldTime))
	}
	if keepalive < 0 || keepalive%time.Second != 0 || keepalive >= hold {
		errs = append(errs, fieldErr(keepaliveField, keepalive, "want whole seconds below the hold time (%v), or 0 for a third of it", hold))
	}
	return errs
}

// CheckAPIListen checks the address of GoBGP's gRPC API: host:port with a
// loopback IP address as host, so that the unauthenticated API is never
// reachable from the network.
func CheckAPIListen(field, hostPort string) []FieldError {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return []FieldError{fieldErr(field, hostPort, "want host:port, such as 127.0.0.1:50051")}
	}
	if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
		return []FieldError{fieldErr(field, hostPort, "host must be a loopback IP address, such as 127.0.0.1 or ::1: the API has no authentication")}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return []FieldError{fieldErr(field, hostPort, "want a port in 1..65535")}
	}
	return nil
}

// CheckPasswordWithAPI checks that no TCP MD5 password is set at field on
// a speaker that serves GoBGP's gRPC API (apiListen non-empty): the API has
// no authentication, and its ListPeer hands every peer's password to any
// local user who connects. The value is not shown.
func CheckPasswordWithAPI(field, password, apiListen string) []FieldError {
	if password != "" && apiListen != "" {
		return []FieldError{fieldErr(field, nil, "must not be set with bgp.apiListen: GoBGP's API has no authentication and gives every peer's password to any local user (ListPeer)")}
	}
	return nil
}

// CheckRestartTime checks the graceful restart time at field: whole seconds,
// at most MaxRestartTime (the OPEN's field has 12 bits); 0 means 120s.
func CheckRestartTime(field string, t time.Duration) []FieldError {
	if t < 0 || t > MaxRestartTime || t%time.Second != 0 {
		return []FieldError{fieldErr(field, t, "want whole seconds in 1s..%v, or 0 for %v", MaxRestartTime, DefaultRestartTime)}
	}
	return nil
}

// CheckIPv4ID checks a BGP identifier (router ID, cluster ID) at field: an
// IPv4 address other than 0.0.0.0.
func CheckIPv4ID(field string, id netip.Addr) []FieldError {
	if !id.Is4() || id.IsUnspecified() {
		return []FieldError{fieldErr(field, id, "must be an IPv4 address other than 0.0.0.0")}
	}
	return nil
}

// Check returns every rule c breaks.
func (c Config) Check() []FieldError {
	var errs []FieldError
	errs = append(errs, CheckASN("asn", c.ASN)...)
	errs = append(errs, CheckIPv4ID("routerID", c.RouterID)...)
	for i, a := range c.ListenAddresses {
		if !a.IsValid() || a.Is4In6() {
			errs = append(errs, fieldErr(fmt.Sprintf("listenAddresses[%d]", i), a, "must be an IPv4 or IPv6 address"))
		}
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		errs = append(errs, fieldErr("listenPort", c.ListenPort, "want 1..65535, 0 for 179, or -1 not to listen"))
	}
	for i, p := range c.Pools {
		if !p.IsValid() || p.Masked() != p {
			errs = append(errs, fieldErr(fmt.Sprintf("pools[%d]", i), p, "must be a prefix with no host bits set"))
		}
	}
	if id := c.RouteReflector.ClusterID; id.IsValid() {
		errs = append(errs, CheckIPv4ID("routeReflector.clusterID", id)...)
	}
	errs = append(errs, CheckRestartTime("gracefulRestart.restartTime", c.GracefulRestart.RestartTime)...)
	if c.ConvergeTimeout < 0 {
		errs = append(errs, fieldErr("convergeTimeout", c.ConvergeTimeout, "must not be negative"))
	}
	if c.APIListen != "" {
		errs = append(errs, CheckAPIListen("apiListen", c.APIListen)...)
	}
	return errs
}

// Validate checks c and returns every problem it finds, joined.
func (c Config) Validate() error { return join("", c.Check()) }

// Check returns every rule p breaks as a peer of a speaker configured with
// c. Uniqueness among peers is ValidatePeers'.
func (p Peer) Check(c Config) []FieldError {
	var errs []FieldError
	if p.Name == "" {
		errs = append(errs, fieldErr("name", p.Name, "must be set"))
	}
	switch a := p.Address; {
	case !a.IsValid():
		errs = append(errs, fieldErr("address", nil, "must be set"))
	case a.IsUnspecified() || a.Is4In6() || a.IsMulticast() || a.Zone() != "":
		errs = append(errs, fieldErr("address", a, "must be a unicast IPv4 or IPv6 address, without zone"))
	}
	errs = append(errs, CheckASN("asn", p.ASN)...)
	errs = append(errs, CheckPassword("password", p.Password)...)
	errs = append(errs, CheckPasswordWithAPI("password", p.Password, c.APIListen)...)
	if p.Multihop > 0 && p.ASN == c.ASN {
		errs = append(errs, fieldErr("multihop", p.Multihop, "applies to eBGP peers only; this peer's asn is bgp.asn"))
	}
	errs = append(errs, CheckTimers("holdTime", "keepaliveInterval", p.HoldTime, p.KeepaliveInterval)...)
	if p.RRClient && !c.RouteReflector.Enabled {
		errs = append(errs, fieldErr("rrClient", p.RRClient, "needs bgp.routeReflector.enabled"))
	}
	if p.RRClient && p.ASN != c.ASN {
		errs = append(errs, fieldErr("rrClient", p.RRClient, "needs an iBGP peer: asn must be bgp.asn (%d)", c.ASN))
	}
	for j, a := range p.Import.Allow {
		field := fmt.Sprintf("import.allow[%d]", j)
		switch {
		case !a.IsValid() || a.Addr().Is4In6():
			errs = append(errs, fieldErr(field, a, "must be a prefix"))
		case a.Masked() != a:
			errs = append(errs, fieldErr(field, a, "has host bits set; did you mean %s?", a.Masked()))
		}
	}
	return append(errs, CheckBFD("bfd", p.BFD)...)
}

// CheckBFD checks BFD settings at field (nil: off).
func CheckBFD(field string, b *BFD) []FieldError {
	if b == nil {
		return nil
	}
	var errs []FieldError
	if i := b.Interval; i != 0 && (i < MinBFDInterval || i > MaxBFDInterval || i%time.Microsecond != 0) {
		errs = append(errs, fieldErr(field+".interval", i, "want %v..%v in whole microseconds, or 0 for %v", MinBFDInterval, MaxBFDInterval, DefaultBFDInterval))
	}
	if b.Multiplier > 255 {
		errs = append(errs, fieldErr(field+".multiplier", b.Multiplier, "want 1..255, or 0 for %d", DefaultBFDMultiplier))
	}
	return errs
}

// ValidatePeers checks peers against the speaker configuration c and returns
// every problem it finds, joined. Names and addresses must be unique.
func ValidatePeers(c Config, peers []Peer) error {
	var errs []error
	names := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	for _, p := range peers {
		if err := join(fmt.Sprintf("peer %q (%v): ", p.Name, p.Address), p.Check(c)); err != nil {
			errs = append(errs, err)
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

// join joins errs, each after prefix.
func join(prefix string, errs []FieldError) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s%w", prefix, e)
	}
	return errors.Join(out...)
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
