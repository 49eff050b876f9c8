package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.10")}
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no asn", func(c *Config) { c.ASN = 0 }, "asn 0: want 1..4294967294"},
		{"IPv6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "routerID 2001:db8::1: must be an IPv4 address"},
		{"no router id", func(c *Config) { c.RouterID = netip.Addr{} }, "routerID invalid IP"},
		{"port", func(c *Config) { c.ListenPort = -2 }, "listenPort -2"},
		{"pool with host bits", func(c *Config) { c.Pools = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} }, "pools[0] 10.0.0.1/8"},
		{"cluster id", func(c *Config) { c.RouteReflector.ClusterID = netip.MustParseAddr("::1") }, "routeReflector.clusterID ::1"},
		{"restart time", func(c *Config) { c.GracefulRestart.RestartTime = 1500 * time.Millisecond }, "gracefulRestart.restartTime 1.5s"},
		{"api on every address", func(c *Config) { c.APIListen = ":50051" }, `apiListen ":50051": host must be a loopback`},
		{"api without port", func(c *Config) { c.APIListen = "127.0.0.1" }, `apiListen "127.0.0.1": want host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if errs := CheckAPIListen("apiListen", "[::1]:50051"); errs != nil {
		t.Errorf("CheckAPIListen([::1]:50051) = %v", errs)
	}
}

func TestValidatePeers(t *testing.T) {
	cfg := validConfig()
	tor := Peer{Name: "tor", Address: netip.MustParseAddr("192.0.2.1"), ASN: 65001}
	if err := ValidatePeers(cfg, []Peer{tor}); err != nil {
		t.Fatalf("ValidatePeers() = %v, want nil", err)
	}
	tests := []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"no name", []Peer{{Address: tor.Address, ASN: 1}}, `name "": must be set`},
		{"no address", []Peer{{Name: "x", ASN: 1}}, "address: must be set"},
		{"no asn", []Peer{{Name: "x", Address: tor.Address}}, "asn 0: want 1..4294967294"},
		{"duplicate name", []Peer{tor, {Name: "tor", Address: netip.MustParseAddr("192.0.2.2"), ASN: 1}}, `peer "tor": name used twice`},
		{"duplicate address", []Peer{tor, {Name: "other", Address: tor.Address, ASN: 1}}, "address 192.0.2.1 used twice"},
		{"rr client without reflector", []Peer{{Name: "x", Address: tor.Address, ASN: 64512, RRClient: true}}, "rrClient true: needs bgp.routeReflector.enabled"},
		{"hold time", []Peer{{Name: "x", Address: tor.Address, ASN: 1, HoldTime: time.Second}}, "holdTime 1s: want whole seconds in 3s..65535s"},
		{"keepalive", []Peer{{Name: "x", Address: tor.Address, ASN: 1, HoldTime: 9 * time.Second, KeepaliveInterval: 9 * time.Second}}, "keepaliveInterval 9s: want whole seconds below the hold time (9s)"},
		{"password", []Peer{{Name: "x", Address: tor.Address, ASN: 1, Password: strings.Repeat("p", 81)}}, "password: is 81 bytes long, at most 80 allowed"},
		{"allow", []Peer{{Name: "x", Address: tor.Address, ASN: 1, Import: ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}}}, "import.allow[0] 10.0.0.1/8: has host bits set; did you mean 10.0.0.0/8?"},
		{"bfd", []Peer{{Name: "x", Address: tor.Address, ASN: 1, BFD: &BFD{Multiplier: 256}}}, "bfd.multiplier 256: want 1..255"},
		// The same limits as the configuration file's, for BGPPeer objects too.
		{"bfd interval too long", []Peer{{Name: "x", Address: tor.Address, ASN: 1, BFD: &BFD{Interval: 2 * time.Hour}}}, `peer "x" (192.0.2.1): bfd.interval 2h0m0s: want 1ms..1h0m0s`},
		{"bfd interval too short", []Peer{{Name: "x", Address: tor.Address, ASN: 1, BFD: &BFD{Interval: 10 * time.Microsecond}}}, "bfd.interval 10µs: want 1ms..1h0m0s"},
		{"AS_TRANS", []Peer{{Name: "x", Address: tor.Address, ASN: ASTrans}}, "asn 23456: is AS_TRANS"},
		{"multihop iBGP", []Peer{{Name: "x", Address: tor.Address, ASN: 64512, Multihop: 2}}, "multihop 2: applies to eBGP peers only"},
		{"password with the API", []Peer{{Name: "x", Address: tor.Address, ASN: 1, Password: "s3cret"}}, "password: must not be set with bgp.apiListen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := cfg
			if strings.Contains(tt.name, "API") {
				cfg.APIListen = "127.0.0.1:50051"
			}
			if err := ValidatePeers(cfg, tt.peers); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidatePeers() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateAdverts(t *testing.T) {
	ok := []Advert{
		{Prefix: netip.MustParsePrefix("10.244.0.0/26"), NextHop: netip.MustParseAddr("192.0.2.10")},
		{Prefix: netip.MustParsePrefix("fd00::/122"), NextHop: netip.MustParseAddr("2001:db8::10")},
	}
	if err := ValidateAdverts(ok); err != nil {
		t.Fatalf("ValidateAdverts() = %v, want nil", err)
	}
	tests := []struct {
		name    string
		adverts []Advert
		want    string
	}{
		{"host bits", []Advert{{Prefix: netip.MustParsePrefix("10.244.0.1/26"), NextHop: ok[0].NextHop}}, "advert 10.244.0.1/26: must be a prefix with no host bits set"},
		{"twice", []Advert{ok[0], ok[0]}, "advert 10.244.0.0/26: prefix listed twice"},
		{"IPv6 prefix, IPv4 next hop", []Advert{{Prefix: ok[1].Prefix, NextHop: ok[0].NextHop}}, "next hop 192.0.2.10 must be an address of the prefix's family"},
		{"no next hop", []Advert{{Prefix: ok[0].Prefix}}, "next hop invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateAdverts(tt.adverts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidateAdverts() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
