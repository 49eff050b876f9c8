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
		{"no asn", func(c *Config) { c.ASN = 0 }, "asn 0: must be set"},
		{"IPv6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "router id 2001:db8::1: must be an IPv4 address"},
		{"no router id", func(c *Config) { c.RouterID = netip.Addr{} }, "router id invalid IP"},
		{"port", func(c *Config) { c.ListenPort = -2 }, "listen port -2"},
		{"pool with host bits", func(c *Config) { c.Pools = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} }, "pool 10.0.0.1/8"},
		{"cluster id", func(c *Config) { c.RouteReflector.ClusterID = netip.MustParseAddr("::1") }, "cluster id ::1"},
		{"restart time", func(c *Config) { c.GracefulRestart.RestartTime = 1500 * time.Millisecond }, "graceful restart time 1.5s"},
		{"api on every address", func(c *Config) { c.APIListen = ":50051" }, `api listen ":50051": host must be a loopback`},
		{"api without port", func(c *Config) { c.APIListen = "127.0.0.1" }, `api listen "127.0.0.1": want host:port`},
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
	if err := ValidateAPIListen("[::1]:50051"); err != nil {
		t.Errorf("ValidateAPIListen([::1]:50051) = %v", err)
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
		{"no name", []Peer{{Address: tor.Address, ASN: 1}}, "name must be set"},
		{"no address", []Peer{{Name: "x", ASN: 1}}, "address must be"},
		{"no asn", []Peer{{Name: "x", Address: tor.Address}}, "asn must be set"},
		{"duplicate name", []Peer{tor, {Name: "tor", Address: netip.MustParseAddr("192.0.2.2"), ASN: 1}}, `peer "tor": name used twice`},
		{"duplicate address", []Peer{tor, {Name: "other", Address: tor.Address, ASN: 1}}, "address 192.0.2.1 used twice"},
		{"rr client without reflector", []Peer{{Name: "x", Address: tor.Address, ASN: 64512, RRClient: true}}, "route reflector is not enabled"},
		{"hold time", []Peer{{Name: "x", Address: tor.Address, ASN: 1, HoldTime: time.Second}}, "hold time 1s"},
		{"keepalive", []Peer{{Name: "x", Address: tor.Address, ASN: 1, HoldTime: 9 * time.Second, KeepaliveInterval: 9 * time.Second}}, "keepalive interval 9s"},
		{"password", []Peer{{Name: "x", Address: tor.Address, ASN: 1, Password: strings.Repeat("p", 81)}}, "password is 81 bytes long"},
		{"allow", []Peer{{Name: "x", Address: tor.Address, ASN: 1, Import: ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}}}, "import allow 10.0.0.1/8"},
		{"bfd", []Peer{{Name: "x", Address: tor.Address, ASN: 1, BFD: &BFD{Multiplier: 256}}}, "bfd multiplier 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
