package config

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fullPeer is a peer that sets every key.
const fullPeer = `
bgp:
  routeReflector:
    enabled: true
  peers:
    - name: tor-a
      address: 192.0.2.1
      port: 1179
      asn: 65001
      password: s3cret
      multihop: 2
      holdTime: 30s
      keepaliveInterval: 10s
      passive: true
      import:
        allow: [10.0.0.0/8, "2001:db8::/32"]
        allowDefault: true
      maxPrefixes: 1000
      bfd:
        enabled: true
        interval: 100ms
        multiplier: 5
    - name: rr-client
      address: "2001:db8::2"
      asn: 64512
      rrClient: true
`

func TestLoadBGPPeers(t *testing.T) {
	isolate(t)
	t.Setenv("NODE_NAME", "node-a")
	c, err := Load(writeConfig(t, fullPeer), nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	want := []Peer{
		{
			Name:              "tor-a",
			Address:           netip.MustParseAddr("192.0.2.1"),
			Port:              1179,
			ASN:               65001,
			Password:          "s3cret",
			Multihop:          2,
			HoldTime:          30 * time.Second,
			KeepaliveInterval: 10 * time.Second,
			Passive:           true,
			Import: PeerImport{
				Allow:        []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")},
				AllowDefault: true,
			},
			MaxPrefixes: 1000,
			BFD:         BFD{Enabled: true, Interval: 100 * time.Millisecond, Multiplier: 5},
		},
		{Name: "rr-client", Address: netip.MustParseAddr("2001:db8::2"), ASN: 64512, RRClient: true},
	}
	if diff := cmp.Diff(want, c.BGP.Peers, equateNetip); diff != "" {
		t.Errorf("bgp.peers mismatch (-want +got):\n%s", diff)
	}
}

// TestExamplePeer keeps the commented-out peer of the example file valid:
// uncommented, it must load, and set every key of a peer.
func TestExamplePeer(t *testing.T) {
	b, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	var peer []string
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "  #   ")
		switch {
		case ok && (len(peer) > 0 || strings.HasPrefix(rest, "- name:")):
			rest, _, _ = strings.Cut(rest, "#")
			if strings.TrimSpace(rest) != "" {
				peer = append(peer, "    "+strings.TrimRight(rest, " \n"))
			}
		case len(peer) > 0:
			goto done
		}
	}
done:
	if len(peer) == 0 {
		t.Fatalf("%s has no commented-out peer", exampleFile)
	}
	isolate(t)
	t.Setenv("NODE_NAME", "node-a")
	yaml := "bgp:\n  peers:\n" + strings.Join(peer, "\n") + "\n"
	c, err := Load(writeConfig(t, yaml), nil)
	if err != nil {
		t.Fatalf("the example peer does not load: %v\n%s", err, yaml)
	}
	for _, key := range []string{"name", "address", "port", "asn", "password", "multihop", "holdTime", "keepaliveInterval",
		"passive", "rrClient", "import:", "allow", "allowDefault", "maxPrefixes", "bfd:", "enabled", "interval", "multiplier"} {
		if !strings.Contains(yaml, " "+strings.TrimSuffix(key, ":")+":") {
			t.Errorf("the example peer does not set %s", key)
		}
	}
	if len(c.BGP.Peers) != 1 || c.BGP.Peers[0].Name != "tor-a" {
		t.Errorf("the example peer loads as %+v", c.BGP.Peers)
	}
}

func TestLoadBGPErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"asn zero", "bgp:\n  asn: 0\n", []string{"bgp.asn 0: want 1..4294967294"}},
		{"asn negative", "bgp:\n  asn: -1\n", []string{"bgp.asn: want an integer in 0..4294967295, got -1"}},
		{"asn too big", "bgp:\n  asn: 4294967296\n", []string{"bgp.asn: want an integer in 0..4294967295, got 4294967296"}},
		{"asn AS_TRANS", "bgp:\n  asn: 23456\n", []string{"bgp.asn 23456: is AS_TRANS"}},
		{"asn not a number", "bgp:\n  asn: lots\n", []string{`bgp.asn: want an integer, got "lots"`}},
		{"IPv6 router ID", "bgp:\n  routerID: '2001:db8::1'\n", []string{"bgp.routerID 2001:db8::1: must be an IPv4 address"}},
		{"node addresses of the wrong family", "bgp:\n  nodeIPv4: '2001:db8::1'\n  nodeIPv6: 192.0.2.1\n", []string{"bgp.nodeIPv4 2001:db8::1: must be a unicast IPv4 address", "bgp.nodeIPv6 192.0.2.1: must be a unicast IPv6 address"}},
		{"mesh password too long", "bgp:\n  meshPassword: " + strings.Repeat("x", 81) + "\n", []string{"bgp.meshPassword: is 81 bytes long, at most 80 allowed"}},
		{"duplicate listen address", "bgp:\n  listenAddresses: [192.0.2.1, 192.0.2.1]\n", []string{"bgp.listenAddresses[1] 192.0.2.1: already listed as bgp.listenAddresses[0]"}},
		{"bad listen address", "bgp:\n  listenAddresses: [nope]\n", []string{"bgp.listenAddresses", `"nope"`}},
		{"listen port 0", "bgp:\n  listenPort: 0\n", []string{"bgp.listenPort 0: want 1..65535, or -1 not to listen"}},
		{"listen port too big", "bgp:\n  listenPort: 70000\n", []string{"bgp.listenPort 70000: want 1..65535"}},
		{"converge timeout 0", "bgp:\n  convergeTimeout: 0\n", []string{"bgp.convergeTimeout 0s: must be at least 1s"}},
		{"api on every address", "bgp:\n  apiListen: ':50051'\n", []string{`bgp.apiListen ":50051": host must be a loopback IP address`}},
		{"api on a public address", "bgp:\n  apiListen: 192.0.2.1:50051\n", []string{`bgp.apiListen "192.0.2.1:50051": host must be a loopback`}},
		{"api without port", "bgp:\n  apiListen: 127.0.0.1\n", []string{`bgp.apiListen "127.0.0.1": want host:port`}},
		// GoBGP's API hands every peer's password to whoever connects (ListPeer).
		{"api with a mesh password", "bgp:\n  apiListen: 127.0.0.1:50051\n  meshPassword: s3cret\n", []string{"bgp.meshPassword: must not be set with bgp.apiListen"}},
		{"api with a peer password", "bgp:\n  apiListen: 127.0.0.1:50051\n  peers:\n    - {name: tor, address: 192.0.2.1, asn: 65001, password: s3cret}\n", []string{"bgp.peers[0].password: must not be set with bgp.apiListen"}},
		{"IPv6 cluster ID", "bgp:\n  routeReflector:\n    clusterID: '::1'\n", []string{"bgp.routeReflector.clusterID ::1: must be an IPv4 address"}},
		{"restart time too long", "bgp:\n  gracefulRestart:\n    restartTime: 2h\n", []string{"bgp.gracefulRestart.restartTime 2h0m0s: want whole seconds in 1s..1h8m15s"}},
		{"restart time fraction", "bgp:\n  gracefulRestart:\n    restartTime: 1500ms\n", []string{"bgp.gracefulRestart.restartTime 1.5s: want whole seconds"}},
		{"unknown peer key", "bgp:\n  peers:\n    - {name: a, address: 192.0.2.1, asn: 65001, holdtme: 9s}\n", []string{"unknown key bgp.peers[0].holdtme (did you mean holdTime?)"}},
		{"unknown peer bfd key", "bgp:\n  peers:\n    - {name: a, address: 192.0.2.1, asn: 65001, bfd: {enable: true}}\n", []string{"unknown key bgp.peers[0].bfd.enable (did you mean enabled?)"}},
		{"peers not a list", "bgp:\n  peers: tor\n", []string{`bgp.peers "tor": want a list of mappings`}},
		{"bad mesh bfd", "bgp:\n  meshBFD: {enabled: true, interval: 10us, multiplier: 300}\n", []string{
			"bgp.meshBFD.interval 10µs: want 1ms..1h0m0s in whole microseconds, or 0 for 300ms",
			"bgp.meshBFD.multiplier 300: want 1..255, or 0 for 3",
		}},
		{"unknown mesh bfd key", "bgp:\n  meshBFD: {enable: true}\n", []string{"unknown key bgp.meshBFD.enable (did you mean enabled?)"}},
		{
			name: "peer without name, address and asn",
			yaml: "bgp:\n  peers:\n    - {port: 179}\n",
			want: []string{`bgp.peers[0].name "": must be set`, "bgp.peers[0].address: must be set", "bgp.peers[0].asn 0: want 1..4294967294"},
		},
		{
			name: "duplicate peers",
			yaml: "bgp:\n  peers:\n    - {name: a, address: 192.0.2.1, asn: 65001}\n    - {name: a, address: 192.0.2.1, asn: 65001}\n",
			want: []string{`bgp.peers[1].name "a": already names bgp.peers[0]`, "bgp.peers[1].address 192.0.2.1: already the address of bgp.peers[0]"},
		},
		{
			name: "bad peer values",
			yaml: `bgp:
  peers:
    - name: Tor_A
      address: 224.0.0.1
      port: 70000
      asn: 65001
      password: ` + strings.Repeat("x", 81) + `
      multihop: 256
      holdTime: 2s
      keepaliveInterval: 1500ms
      import:
        allow: [10.0.0.1/8]
      bfd:
        enabled: true
        interval: 10us
        multiplier: 300
`,
			want: []string{
				`bgp.peers[0].name "Tor_A": must be a DNS-1123 label`,
				"bgp.peers[0].address 224.0.0.1: must be a unicast IPv4 or IPv6 address",
				"bgp.peers[0].port 70000: want 1..65535, or 0 for 179",
				"bgp.peers[0].password: is 81 bytes long, at most 80 allowed",
				"bgp.peers[0].multihop 256: want a TTL in 1..255",
				"bgp.peers[0].holdTime 2s: want whole seconds in 3s..65535s",
				"bgp.peers[0].keepaliveInterval 1.5s: want whole seconds below the hold time",
				"bgp.peers[0].import.allow[0] 10.0.0.1/8: has host bits set; did you mean 10.0.0.0/8?",
				"bgp.peers[0].bfd.interval 10µs: want 1ms..1h",
				"bgp.peers[0].bfd.multiplier 300: want 1..255",
			},
		},
		{
			name: "keepalive not below the hold time",
			yaml: "bgp:\n  peers:\n    - {name: a, address: 192.0.2.1, asn: 65001, holdTime: 9s, keepaliveInterval: 9s}\n",
			want: []string{"bgp.peers[0].keepaliveInterval 9s: want whole seconds below the hold time (9s)"},
		},
		{
			name: "multihop on an iBGP peer",
			yaml: "bgp:\n  peers:\n    - {name: a, address: 192.0.2.1, asn: 64512, multihop: 2}\n",
			want: []string{"bgp.peers[0].multihop 2: applies to eBGP peers only"},
		},
		{
			name: "route reflector client without a route reflector, over eBGP",
			yaml: "bgp:\n  peers:\n    - {name: a, address: 192.0.2.1, asn: 65001, rrClient: true}\n",
			want: []string{"bgp.peers[0].rrClient true: needs bgp.routeReflector.enabled", "bgp.peers[0].rrClient true: needs an iBGP peer: asn must be bgp.asn (64512)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			t.Setenv("NODE_NAME", "node-a")
			_, err := Load(writeConfig(t, tt.yaml), nil)
			if err == nil {
				t.Fatalf("Load() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load() error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadBGPFromEnvironment(t *testing.T) {
	isolate(t)
	t.Setenv("NODE_NAME", "node-a")
	t.Setenv("FLATNET_BGP_ASN", "-5")
	_, err := Load("", nil)
	if err == nil || !strings.Contains(err.Error(), "bgp.asn: want an integer in 0..4294967295, got -5") {
		t.Errorf("Load() = %v, want a range error for bgp.asn", err)
	}
}
