package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateNetip lets cmp compare netip values, which are safe to compare with ==.
var equateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestDefault(t *testing.T) {
	got := Default()
	got.NodeName = "node-1" // the host name differs from machine to machine
	want := Config{
		NodeName: "node-1",
		Log:      Log{Level: "info", Format: "text"},
		API:      API{Socket: "/run/flatnet/flatnet.sock"},
		Datastore: Datastore{Type: "file", File: FileStore{Dir: "/var/lib/flatnet/ipam", Fsync: true},
			Kubernetes: Kubernetes{GCGrace: 5 * time.Minute, GCInterval: time.Minute, BGPPasswordsDir: "/etc/flatnet/bgp-passwords"}},
		Health: Health{Address: "127.0.0.1:9797"},
		IPAM: IPAM{
			Pools:             []Pool{{Name: "default-ipv4", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}},
			BlockReleaseGrace: 5 * time.Minute,
			GatewayIPv4:       netip.MustParseAddr("169.254.1.1"),
			GatewayIPv6:       netip.MustParseAddr("fe80::1"),
		},
		BGP: BGP{
			ASN:             64512,
			ListenPort:      179,
			Mesh:            true,
			Multipath:       true,
			ConvergeTimeout: time.Minute,
			GracefulRestart: GracefulRestart{Enabled: true, RestartTime: 2 * time.Minute},
		},
		Policy: Policy{Resync: 10 * time.Second},
	}
	if diff := cmp.Diff(want, got, equateNetip); diff != "" {
		t.Errorf("Default() mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Default() with a node name does not validate: %v", err)
	}
}

func TestValidateBlockSizeZeroIsFamilyDefault(t *testing.T) {
	c := Default()
	c.NodeName = "node-1"
	c.IPAM.Pools = []Pool{
		{Name: "v4", CIDR: netip.MustParsePrefix("10.0.0.0/16")},
		{Name: "v6", CIDR: netip.MustParsePrefix("fd00::/64")},
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}

	c.IPAM.Pools = []Pool{{Name: "small", CIDR: netip.MustParsePrefix("10.0.0.0/28")}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "ipam.pools[0].blockSize 26 (the IPv4 default): block size 26 does not fit in pool 10.0.0.0/28") {
		t.Errorf("Validate() = %v, want the default block size not fitting a /28", err)
	}
}

func TestLogHandler(t *testing.T) {
	tests := []struct {
		log       Log
		wantDebug bool
		wantJSON  bool
	}{
		{Log{Level: "debug", Format: "json"}, true, true},
		{Log{Level: "info", Format: "text"}, false, false},
		{Log{Level: "error", Format: "json"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.log.Level+"/"+tt.log.Format, func(t *testing.T) {
			var buf bytes.Buffer
			h := tt.log.Handler(&buf)
			if got := h.Enabled(t.Context(), slog.LevelDebug); got != tt.wantDebug {
				t.Errorf("debug enabled = %v, want %v", got, tt.wantDebug)
			}
			slog.New(h).Error("boom", "peer", "10.0.0.1")
			if got := json.Valid(buf.Bytes()); got != tt.wantJSON {
				t.Errorf("output %q: JSON = %v, want %v", buf.String(), got, tt.wantJSON)
			}
		})
	}
}
