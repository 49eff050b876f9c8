package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

const exampleFile = "../deploy/config/flatnet.yaml"

// isolate unsets every environment variable Load reads, for the duration of
// the test, so that the machine's environment cannot leak into it.
func isolate(t *testing.T) {
	t.Helper()
	for _, s := range settings(Default()) {
		for _, name := range envVars(s) {
			t.Setenv(name, "") // restores the old value after the test
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// writeConfig writes yaml to a file in a fresh directory and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flatnet.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseFlags returns a flag set with the agent's flags, parsed from args.
func parseFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("flatnet-agent", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// exampleConfig is what exampleFile holds, on a node named node-a.
func exampleConfig() Config {
	return Config{
		NodeName: "node-a",
		Log:      Log{Level: "info", Format: "text"},
		API:      API{Socket: "/run/flatnet/flatnet.sock"},
		Datastore: Datastore{Type: "file", File: FileStore{Dir: "/var/lib/flatnet/ipam", Fsync: true},
			Kubernetes: Kubernetes{GCGrace: 5 * time.Minute, GCInterval: time.Minute, BGPPasswordsDir: "/etc/flatnet/bgp-passwords"}},
		Health: Health{Address: "127.0.0.1:9797"},
		IPAM: IPAM{
			Pools: []Pool{
				{Name: "default-ipv4", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26},
				{Name: "default-ipv6", CIDR: netip.MustParsePrefix("fd00:10:244::/56"), BlockSize: 122},
			},
			StrictAffinity:    false,
			BlockReleaseGrace: 5 * time.Minute,
			GatewayIPv4:       netip.MustParseAddr("169.254.1.1"),
			GatewayIPv6:       netip.MustParseAddr("fe80::1"),
		},
		BGP: BGP{
			Enabled:         true,
			ASN:             64512,
			ListenAddresses: []netip.Addr{},
			ListenPort:      179,
			Mesh:            true,
			Multipath:       true,
			ConvergeTimeout: time.Minute,
			GracefulRestart: GracefulRestart{Enabled: true, RestartTime: 2 * time.Minute},
			Peers:           []Peer{},
		},
		Policy: Policy{Enabled: false, Resync: 10 * time.Second},
	}
}

func TestLoadExample(t *testing.T) {
	isolate(t)
	t.Setenv("NODE_NAME", "node-a")
	got, err := Load(exampleFile, nil)
	if err != nil {
		t.Fatalf("Load(%s) = %v", exampleFile, err)
	}
	if diff := cmp.Diff(exampleConfig(), got, equateNetip); diff != "" {
		t.Errorf("Load(%s) mismatch (-want +got):\n%s", exampleFile, diff)
	}
}

// perNodeKeys are shown in the example file commented out: a file shared by
// all nodes must not set them.
var perNodeKeys = []string{"nodeName", "bgp.routerID", "bgp.nodeIPv4", "bgp.nodeIPv6", "bgp.routeReflector.clusterID"}

// TestExampleSetsEveryKey keeps the example file complete: every key is in it,
// spelt as the docs spell it, set or, for perNodeKeys, commented out.
func TestExampleSetsEveryKey(t *testing.T) {
	b, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := viper.NewCodecRegistry().Decoder("yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string]any{}
	if err := dec.Decode(b, raw); err != nil {
		t.Fatal(err)
	}
	for _, s := range settings(Default()) {
		if slices.Contains(perNodeKeys, s.key) {
			leaf := s.key[strings.LastIndex(s.key, ".")+1:]
			if !strings.Contains(string(b), "# "+leaf+": ") {
				t.Errorf("%s does not show %s, commented out", exampleFile, s.key)
			}
			continue
		}
		var v any = raw
		for name := range strings.SplitSeq(s.key, ".") {
			m, _ := v.(map[string]any)
			v = m[name]
		}
		if v == nil {
			t.Errorf("%s does not set %s", exampleFile, s.key)
		}
	}
}

// TestDocsListEverything keeps docs/configuration.md in step with the code.
func TestDocsListEverything(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var want []string
	for _, s := range settings(Default()) {
		want = append(want, "`"+s.key+"`")
		for _, name := range envVars(s) {
			want = append(want, "`"+name+"`")
		}
	}
	want = append(want, "`--config`")
	for _, f := range agentFlags {
		want = append(want, "`--"+f.name+"`")
	}
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("docs/configuration.md does not mention %s", w)
		}
	}
}

func TestLoadWithoutFile(t *testing.T) {
	isolate(t)
	t.Setenv("FLATNET_NODENAME", "node-a")
	got, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load(\"\", nil) = %v", err)
	}
	want := Default()
	want.NodeName = "node-a"
	if diff := cmp.Diff(want, got, equateNetip); diff != "" {
		t.Errorf("Load(\"\", nil) mismatch (-want +got):\n%s", diff)
	}
}

func TestPrecedence(t *testing.T) {
	file := "log:\n  level: warn\n"
	tests := []struct {
		name       string
		env        string // FLATNET_LOG_LEVEL
		args       []string
		wantLevel  string
		wantSocket string
	}{
		{
			name:       "file over default",
			wantLevel:  "warn",
			wantSocket: "/run/flatnet/flatnet.sock",
		},
		{
			name:       "env over file",
			env:        "debug",
			wantLevel:  "debug",
			wantSocket: "/run/flatnet/flatnet.sock",
		},
		{
			name:       "flag over env",
			env:        "debug",
			args:       []string{"--log-level=error"},
			wantLevel:  "error",
			wantSocket: "/run/flatnet/flatnet.sock",
		},
		{
			name:       "flag over file",
			args:       []string{"--log-level", "error"},
			wantLevel:  "error",
			wantSocket: "/run/flatnet/flatnet.sock",
		},
		{
			name:       "unset flag does not override file",
			args:       []string{"--socket=/tmp/flatnet.sock"},
			wantLevel:  "warn",
			wantSocket: "/tmp/flatnet.sock",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			t.Setenv("FLATNET_NODENAME", "node-a")
			if tt.env != "" {
				t.Setenv("FLATNET_LOG_LEVEL", tt.env)
			}
			c, err := Load(writeConfig(t, file), parseFlags(t, tt.args...))
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if c.Log.Level != tt.wantLevel || c.API.Socket != tt.wantSocket {
				t.Errorf("log.level, api.socket = %q, %q; want %q, %q", c.Log.Level, c.API.Socket, tt.wantLevel, tt.wantSocket)
			}
		})
	}
}

// TestEnvOverridesEveryScalarKey sets each scalar key from the environment
// over the example file: viper reads the environment only for keys it knows,
// so a key missing from Load's registration would fail here.
func TestEnvOverridesEveryScalarKey(t *testing.T) {
	tests := []struct {
		env, value string
		want       func(*Config) // turns exampleConfig() into the expected result
		wantErr    string        // no valid value differs from the default
	}{
		{env: "FLATNET_NODENAME", value: "env-node", want: func(c *Config) { c.NodeName = "env-node" }},
		{env: "FLATNET_LOG_LEVEL", value: "debug", want: func(c *Config) { c.Log.Level = "debug" }},
		{env: "FLATNET_LOG_FORMAT", value: "json", want: func(c *Config) { c.Log.Format = "json" }},
		{env: "FLATNET_API_SOCKET", value: "/tmp/f.sock", want: func(c *Config) { c.API.Socket = "/tmp/f.sock" }},
		{env: "FLATNET_DATASTORE_TYPE", value: "kubernetes", want: func(c *Config) { c.Datastore.Type = "kubernetes" }},
		{env: "FLATNET_DATASTORE_KUBERNETES_KUBECONFIG", value: "/etc/k.conf", want: func(c *Config) { c.Datastore.Kubernetes.Kubeconfig = "/etc/k.conf" }},
		{env: "FLATNET_DATASTORE_KUBERNETES_GCGRACE", value: "10m", want: func(c *Config) { c.Datastore.Kubernetes.GCGrace = 10 * time.Minute }},
		{env: "FLATNET_DATASTORE_KUBERNETES_GCINTERVAL", value: "30s", want: func(c *Config) { c.Datastore.Kubernetes.GCInterval = 30 * time.Second }},
		{env: "FLATNET_DATASTORE_KUBERNETES_BGPPASSWORDSDIR", value: "/run/pw", want: func(c *Config) { c.Datastore.Kubernetes.BGPPasswordsDir = "/run/pw" }},
		{env: "FLATNET_HEALTH_ADDRESS", value: "127.0.0.1:9898", want: func(c *Config) { c.Health.Address = "127.0.0.1:9898" }},
		{env: "FLATNET_DATASTORE_FILE_DIR", value: "/tmp/ipam", want: func(c *Config) { c.Datastore.File.Dir = "/tmp/ipam" }},
		{env: "FLATNET_DATASTORE_FILE_FSYNC", value: "false", want: func(c *Config) { c.Datastore.File.Fsync = false }},
		{env: "FLATNET_IPAM_STRICTAFFINITY", value: "true", want: func(c *Config) { c.IPAM.StrictAffinity = true }},
		{env: "FLATNET_IPAM_STRICTAFFINITY", value: "1", wantErr: `ipam.strictAffinity: want true or false, got "1"`},
		{env: "FLATNET_IPAM_BLOCKRELEASEGRACE", value: "90s", want: func(c *Config) { c.IPAM.BlockReleaseGrace = 90 * time.Second }},
		{env: "FLATNET_IPAM_GATEWAYIPV4", value: "169.254.0.1", want: func(c *Config) { c.IPAM.GatewayIPv4 = netip.MustParseAddr("169.254.0.1") }},
		{env: "FLATNET_IPAM_GATEWAYIPV6", value: "fe80::2", want: func(c *Config) { c.IPAM.GatewayIPv6 = netip.MustParseAddr("fe80::2") }},
		{env: "FLATNET_BGP_ENABLED", value: "false", want: func(c *Config) { c.BGP.Enabled = false }},
		{env: "FLATNET_BGP_ASN", value: "4200000001", want: func(c *Config) { c.BGP.ASN = 4200000001 }},
		{env: "FLATNET_BGP_NODEIPV4", value: "192.0.2.10", want: func(c *Config) { c.BGP.NodeIPv4 = netip.MustParseAddr("192.0.2.10") }},
		{env: "FLATNET_BGP_NODEIPV6", value: "2001:db8::10", want: func(c *Config) { c.BGP.NodeIPv6 = netip.MustParseAddr("2001:db8::10") }},
		{env: "FLATNET_BGP_MESHPASSWORD", value: "s3cret", want: func(c *Config) { c.BGP.MeshPassword = "s3cret" }},
		{env: "FLATNET_BGP_MESHHOLDTIME", value: "9s", want: func(c *Config) { c.BGP.MeshHoldTime = 9 * time.Second }},
		{env: "FLATNET_BGP_MESHKEEPALIVEINTERVAL", value: "3s", want: func(c *Config) { c.BGP.MeshKeepaliveInterval = 3 * time.Second }},
		{env: "FLATNET_BGP_MESHBFD_ENABLED", value: "true", want: func(c *Config) { c.BGP.MeshBFD.Enabled = true }},
		{env: "FLATNET_BGP_MESHBFD_INTERVAL", value: "100ms", want: func(c *Config) { c.BGP.MeshBFD.Interval = 100 * time.Millisecond }},
		{env: "FLATNET_BGP_MESHBFD_MULTIPLIER", value: "5", want: func(c *Config) { c.BGP.MeshBFD.Multiplier = 5 }},
		{env: "FLATNET_BGP_ROUTERID", value: "192.0.2.10", want: func(c *Config) { c.BGP.RouterID = netip.MustParseAddr("192.0.2.10") }},
		{env: "FLATNET_BGP_LISTENPORT", value: "-1", want: func(c *Config) { c.BGP.ListenPort = -1 }},
		{env: "FLATNET_BGP_MESH", value: "false", want: func(c *Config) { c.BGP.Mesh = false }},
		{env: "FLATNET_BGP_MULTIPATH", value: "false", want: func(c *Config) { c.BGP.Multipath = false }},
		{env: "FLATNET_BGP_CONVERGETIMEOUT", value: "2m", want: func(c *Config) { c.BGP.ConvergeTimeout = 2 * time.Minute }},
		{env: "FLATNET_BGP_APILISTEN", value: "127.0.0.1:50051", want: func(c *Config) { c.BGP.APIListen = "127.0.0.1:50051" }},
		{env: "FLATNET_BGP_ROUTEREFLECTOR_ENABLED", value: "true", want: func(c *Config) { c.BGP.RouteReflector.Enabled = true }},
		{env: "FLATNET_BGP_ROUTEREFLECTOR_CLUSTERID", value: "192.0.2.1", want: func(c *Config) { c.BGP.RouteReflector.ClusterID = netip.MustParseAddr("192.0.2.1") }},
		{env: "FLATNET_BGP_GRACEFULRESTART_ENABLED", value: "false", want: func(c *Config) { c.BGP.GracefulRestart.Enabled = false }},
		{env: "FLATNET_BGP_GRACEFULRESTART_RESTARTTIME", value: "90s", want: func(c *Config) { c.BGP.GracefulRestart.RestartTime = 90 * time.Second }},
		{env: "FLATNET_POLICY_ENABLED", value: "true", wantErr: "policy.enabled true: needs datastore.type kubernetes"},
		{env: "FLATNET_POLICY_RESYNC", value: "30s", want: func(c *Config) { c.Policy.Resync = 30 * time.Second }},
	}

	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.env] = true
	}
	for _, s := range settings(Default()) {
		if vars := envVars(s); len(vars) > 0 && !covered[vars[0]] {
			t.Errorf("no test sets %s from %s", s.key, vars[0])
		}
	}

	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			isolate(t)
			t.Setenv("NODE_NAME", "node-a")
			t.Setenv(tt.env, tt.value)
			got, err := Load(exampleFile, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			want := exampleConfig()
			tt.want(&want)
			if diff := cmp.Diff(want, got, equateNetip); diff != "" {
				t.Errorf("Load() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNodeName(t *testing.T) {
	tests := []struct {
		name               string
		file               string
		flatnetEnv, k8sEnv string
		args               []string
		want               string
	}{
		{name: "NODE_NAME when FLATNET_NODENAME is unset", k8sEnv: "k8s-node", want: "k8s-node"},
		{name: "FLATNET_NODENAME over NODE_NAME", flatnetEnv: "flatnet-node", k8sEnv: "k8s-node", want: "flatnet-node"},
		{name: "NODE_NAME over file", file: "nodeName: file-node\n", k8sEnv: "k8s-node", want: "k8s-node"},
		{name: "file without env", file: "nodeName: file-node\n", want: "file-node"},
		{name: "flag over env", k8sEnv: "k8s-node", args: []string{"--node-name=flag-node"}, want: "flag-node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			if tt.flatnetEnv != "" {
				t.Setenv("FLATNET_NODENAME", tt.flatnetEnv)
			}
			if tt.k8sEnv != "" {
				t.Setenv("NODE_NAME", tt.k8sEnv)
			}
			path := ""
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			c, err := Load(path, parseFlags(t, tt.args...))
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if c.NodeName != tt.want {
				t.Errorf("NodeName = %q, want %q", c.NodeName, tt.want)
			}
		})
	}
}

func TestFlagsSetTheirKeys(t *testing.T) {
	isolate(t)
	fs := parseFlags(t,
		"--config=/ignored/by/load.yaml",
		"--node-name=flag-node",
		"--log-level=debug",
		"--log-format=json",
		"--socket=/tmp/flag.sock",
		"--datastore-dir=/tmp/flag-ipam",
	)
	got, err := Load("", fs)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	want := Default()
	want.NodeName = "flag-node"
	want.Log = Log{Level: "debug", Format: "json"}
	want.API.Socket = "/tmp/flag.sock"
	want.Datastore.File.Dir = "/tmp/flag-ipam"
	if diff := cmp.Diff(want, got, equateNetip); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
}

func TestBlockSizeFamilyDefault(t *testing.T) {
	isolate(t)
	t.Setenv("NODE_NAME", "node-a")
	path := writeConfig(t, `
ipam:
  pools:
    - name: v4
      cidr: 10.0.0.0/16
    - name: v6
      cidr: fd00::/64
`)
	c, err := Load(path, nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	want := []Pool{
		{Name: "v4", CIDR: netip.MustParsePrefix("10.0.0.0/16"), BlockSize: 26},
		{Name: "v6", CIDR: netip.MustParsePrefix("fd00::/64"), BlockSize: 122},
	}
	if diff := cmp.Diff(want, c.IPAM.Pools, equateNetip); diff != "" {
		t.Errorf("pools mismatch (-want +got):\n%s", diff)
	}
}

// With the kubernetes datastore, IPPool objects are pools too: the file may
// list none (the agent checks at start that some pool exists).
func TestKubernetesNeedsNoPoolInFile(t *testing.T) {
	isolate(t)
	t.Setenv("NODE_NAME", "node-a")
	c, err := Load(writeConfig(t, "datastore: {type: kubernetes}\nipam: {pools: []}\n"), nil)
	if err != nil || len(c.IPAM.Pools) != 0 {
		t.Errorf("Load() = %v pools, %v; want none and no error", c.IPAM.Pools, err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must be in the error; $FILE stands for the file's path
	}{
		// Unknown keys.
		{
			name: "unknown top-level key",
			yaml: "ipma:\n  strictAffinity: true\n",
			want: []string{"config $FILE: unknown key ipma (did you mean ipam?)"},
		},
		{
			name: "misspelt key",
			yaml: "ipam:\n  stictAffinity: true\n",
			want: []string{"config $FILE: unknown key ipam.stictAffinity (did you mean strictAffinity?)"},
		},
		{
			name: "misspelt pool key",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/16, blocksize2: 26}\n",
			want: []string{"unknown key ipam.pools[0].blocksize2 (did you mean blockSize?)"},
		},
		{
			name: "unknown key like no other",
			yaml: "log:\n  colour: true\n",
			want: []string{"unknown key log.colour"},
		},
		{
			name: "section that is not a mapping",
			yaml: "log: debug\n",
			want: []string{`log "debug": want a mapping of keys`},
		},
		{
			name: "pools that are not a list",
			yaml: "ipam:\n  pools: 10.0.0.0/16\n",
			want: []string{`ipam.pools "10.0.0.0/16": want a list of mappings`},
		},
		{
			name: "key repeated in another case",
			yaml: "log:\n  level: debug\nLOG:\n  format: json\n",
			want: []string{"config $FILE: line 3: key LOG repeats log of line 1 (keys match whatever their case)"},
		},
		{
			name: "nested key repeated in another case",
			yaml: "ipam:\n  strictAffinity: true\n  strictaffinity: false\n",
			want: []string{"config $FILE: line 3: key ipam.strictaffinity repeats ipam.strictAffinity of line 2 (keys match whatever their case)"},
		},
		{
			name: "pool key repeated in another case",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/16, CIDR: 10.1.0.0/16}\n",
			want: []string{"key ipam.pools[0].CIDR repeats ipam.pools[0].cidr of line 3"},
		},
		// Pools.
		{
			name: "bad CIDR",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/33}\n",
			want: []string{"ipam.pools[0].cidr", "10.0.0.0/33"},
		},
		{
			name: "CIDR with host bits",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.1/16}\n",
			want: []string{"ipam.pools[0].cidr 10.0.0.1/16: has host bits set; did you mean 10.0.0.0/16?"},
		},
		{
			name: "missing CIDR",
			yaml: "ipam:\n  pools:\n    - {name: a}\n",
			want: []string{"ipam.pools[0].cidr: must be set"},
		},
		{
			name: "IPv4 block size out of range",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/8, blockSize: 19}\n",
			want: []string{"ipam.pools[0].blockSize 19: out of range for an IPv4 pool, want 20..32"},
		},
		{
			name: "IPv6 block size out of range",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 'fd00::/56', blockSize: 64}\n",
			want: []string{"ipam.pools[0].blockSize 64: out of range for an IPv6 pool, want 116..128"},
		},
		{
			name: "block size that does not fit its pool",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/26, blockSize: 24}\n",
			want: []string{"ipam.pools[0].blockSize 24: block size 24 does not fit in pool 10.0.0.0/26"},
		},
		{
			name: "block size that is not a number",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/16, blockSize: big}\n",
			want: []string{`ipam.pools[0].blockSize: want an integer, got "big"`},
		},
		{
			name: "overlapping pools",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/16}\n    - {name: b, cidr: 10.0.0.0/24}\n",
			want: []string{"ipam.pools[1].cidr 10.0.0.0/24 overlaps ipam.pools[0].cidr 10.0.0.0/16"},
		},
		{
			name: "duplicate pool name",
			yaml: "ipam:\n  pools:\n    - {name: a, cidr: 10.0.0.0/16}\n    - {name: a, cidr: 10.1.0.0/16}\n",
			want: []string{`ipam.pools[1].name "a": already names ipam.pools[0]`},
		},
		{
			name: "pool name that is not a DNS label",
			yaml: "ipam:\n  pools:\n    - {name: Pool_A, cidr: 10.0.0.0/16}\n",
			want: []string{`ipam.pools[0].name "Pool_A": must be a DNS-1123 label`},
		},
		{
			name: "pool without a name",
			yaml: "ipam:\n  pools:\n    - {cidr: 10.0.0.0/16}\n",
			want: []string{`ipam.pools[0].name "": must be set`},
		},
		{
			name: "empty pools list",
			yaml: "ipam:\n  pools: []\n",
			want: []string{"ipam.pools []: at least one pool is required"},
		},
		// Log.
		{
			name: "bad log level",
			yaml: "log:\n  level: verbose\n",
			want: []string{`log.level "verbose": want debug, info, warn or error`},
		},
		{
			name: "bad log format",
			yaml: "log:\n  format: xml\n",
			want: []string{`log.format "xml": want text or json`},
		},
		// API and datastore.
		{
			name: "relative socket",
			yaml: "api:\n  socket: flatnet.sock\n",
			want: []string{`api.socket "flatnet.sock": must be an absolute path`},
		},
		{
			name: "socket path too long",
			yaml: "api:\n  socket: /run/" + strings.Repeat("x", 100) + ".sock\n",
			want: []string{`api.socket "/run/xxx`, "is 110 bytes long; a unix socket path must be shorter than 108"},
		},
		{
			name: "relative datastore dir",
			yaml: "datastore:\n  file:\n    dir: var/lib/flatnet\n",
			want: []string{`datastore.file.dir "var/lib/flatnet": must be an absolute path`},
		},
		{
			name: "kubernetes datastore with a relative kubeconfig",
			yaml: "datastore:\n  type: kubernetes\n  kubernetes: {kubeconfig: kube.conf}\n",
			want: []string{`datastore.kubernetes.kubeconfig "kube.conf": must be an absolute path`},
		},
		{
			name: "kubernetes datastore with a relative passwords directory",
			yaml: "datastore:\n  type: kubernetes\n  kubernetes: {bgpPasswordsDir: bgp-passwords}\n",
			want: []string{`datastore.kubernetes.bgpPasswordsDir "bgp-passwords": must be an absolute path`},
		},
		{
			name: "bad health address",
			yaml: "health: {address: 9797}\n",
			want: []string{`health.address "9797": want host:port`},
		},
		{
			name: "policy with the file datastore",
			yaml: "policy: {enabled: true}\n",
			want: []string{`policy.enabled true: needs datastore.type kubernetes`},
		},
		{
			name: "policy resync too short",
			yaml: "policy: {resync: 100ms}\n",
			want: []string{`policy.resync 100ms: want at least 1s`},
		},
		{
			name: "unknown datastore",
			yaml: "datastore:\n  type: etcd\n",
			want: []string{`datastore.type "etcd": unknown datastore type`},
		},
		// Durations, booleans, gateways.
		{
			name: "bad duration",
			yaml: "ipam:\n  blockReleaseGrace: soon\n",
			want: []string{`ipam.blockReleaseGrace: time: invalid duration "soon"`},
		},
		{
			name: "negative duration",
			yaml: "ipam:\n  blockReleaseGrace: -1m\n",
			want: []string{"ipam.blockReleaseGrace -1m0s: must not be negative"},
		},
		{
			name: "duration without a unit",
			yaml: "ipam:\n  blockReleaseGrace: 300\n",
			want: []string{"ipam.blockReleaseGrace: want a duration with a unit", "got 300"},
		},
		{
			name: "bad boolean",
			yaml: "ipam:\n  strictAffinity: maybe\n",
			want: []string{`ipam.strictAffinity: want true or false, got "maybe"`},
		},
		{
			name: "number as a boolean",
			yaml: "ipam:\n  strictAffinity: 12345\n",
			want: []string{"ipam.strictAffinity: want true or false, got 12345"},
		},
		{
			name: "negative number as a boolean",
			yaml: "bgp:\n  enabled: -7\n",
			want: []string{"bgp.enabled: want true or false, got -7"},
		},
		{
			name: "fraction as a boolean",
			yaml: "datastore:\n  file: {fsync: 0.5}\n",
			want: []string{"datastore.file.fsync: want true or false, got 0.5"},
		},
		{
			name: "zero as a boolean",
			yaml: "bgp:\n  peers:\n    - {name: tor, address: 192.0.2.1, asn: 65001, passive: 0}\n",
			want: []string{"bgp.peers[0].passive: want true or false, got 0"},
		},
		{
			name: "YAML 1.1 boolean",
			yaml: "ipam:\n  strictAffinity: yes\n",
			want: []string{`ipam.strictAffinity: want true or false, got "yes"`},
		},
		{
			name: "unparsable gateway",
			yaml: "ipam:\n  gatewayIPv4: nope\n",
			want: []string{"ipam.gatewayIPv4", `"nope"`},
		},
		{
			name: "IPv4 gateway of the wrong family",
			yaml: "ipam:\n  gatewayIPv4: 'fe80::1'\n",
			want: []string{"ipam.gatewayIPv4 fe80::1: must be an IPv4 address"},
		},
		{
			name: "IPv4 gateway not link-local",
			yaml: "ipam:\n  gatewayIPv4: 10.0.0.1\n",
			want: []string{"ipam.gatewayIPv4 10.0.0.1: must be link-local, in 169.254.0.0/16"},
		},
		{
			name: "IPv6 gateway of the wrong family",
			yaml: "ipam:\n  gatewayIPv6: 169.254.1.1\n",
			want: []string{"ipam.gatewayIPv6 169.254.1.1: must be an IPv6 address"},
		},
		{
			name: "IPv6 gateway not link-local",
			yaml: "ipam:\n  gatewayIPv6: '2001:db8::1'\n",
			want: []string{"ipam.gatewayIPv6 2001:db8::1: must be link-local unicast, in fe80::/10"},
		},
		// Node name.
		{
			name: "empty node name",
			yaml: "nodeName: ''\n",
			want: []string{`nodeName "": must be set`},
		},
		{
			name: "node name that is not a subdomain",
			yaml: "nodeName: Node_1\n",
			want: []string{`nodeName "Node_1": must be a lowercase RFC 1123 subdomain`},
		},
		{
			name: "node name too long",
			yaml: "nodeName: " + strings.Repeat("a", 254) + "\n",
			want: []string{"nodeName \"aaa", "is 254 characters long, at most 253 allowed"},
		},
		// Several at once.
		{
			name: "every problem reported",
			yaml: "log:\n  level: loud\n  format: xml\napi:\n  socket: x.sock\n",
			want: []string{`log.level "loud"`, `log.format "xml"`, `api.socket "x.sock"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			path := writeConfig(t, tt.yaml)
			_, err := Load(path, nil)
			if err == nil {
				t.Fatalf("Load() = nil, want an error")
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "$FILE", path); !strings.Contains(err.Error(), w) {
					t.Errorf("Load() error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	isolate(t)
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing.yaml")
		_, err := Load(path, nil)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("Load(%s) = %v, want a not-exist error naming the file", path, err)
		}
	})
	t.Run("second document", func(t *testing.T) {
		path := writeConfig(t, "log: {level: debug}\n---\nlog: {level: error}\n")
		_, err := Load(path, nil)
		if err == nil || !strings.Contains(err.Error(), "parse config "+path+": more than one YAML document") {
			t.Errorf("Load(%s) = %v, want an error about the second document", path, err)
		}
	})
	t.Run("second document empty", func(t *testing.T) {
		path := writeConfig(t, "log: {level: debug}\n---\n")
		if _, err := Load(path, nil); err == nil {
			t.Errorf("Load(%s) = nil, want an error about the second document", path)
		}
	})
	t.Run("one document marked", func(t *testing.T) {
		path := writeConfig(t, "---\nlog: {level: debug}\n...\n")
		if c, err := Load(path, nil); err != nil || c.Log.Level != "debug" {
			t.Errorf("Load(%s) = %v, %v; want level debug", path, c.Log, err)
		}
	})
	t.Run("YAML syntax error", func(t *testing.T) {
		path := writeConfig(t, "log:\n  level: [info\n")
		_, err := Load(path, nil)
		if err == nil || !strings.Contains(err.Error(), "parse config "+path+": yaml: line") {
			t.Errorf("Load(%s) = %v, want a YAML error naming the file and line", path, err)
		}
	})
}

// Load reads at most 1 MiB, and never lets the YAML decoder compare the keys
// of a huge mapping with each other (quadratic: 100,000 keys took a minute).
func TestLoadBoundsTheFile(t *testing.T) {
	isolate(t)
	t.Run("larger than 1 MiB", func(t *testing.T) {
		// Valid YAML all the way: only its size is wrong.
		path := writeConfig(t, "log: {level: info}\n"+strings.Repeat("# padding\n", 110_000))
		_, err := Load(path, nil)
		if err == nil || !strings.Contains(err.Error(), "read config "+path+": larger than 1 MiB") {
			t.Errorf("Load() = %v, want a size error naming the file", err)
		}
	})
	t.Run("a mapping of 80,000 keys", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("ipam:\n")
		for i := range 80_000 {
			fmt.Fprintf(&b, "  k%d: 1\n", i)
		}
		if b.Len() > maxFileSize {
			t.Fatalf("test file of %d bytes is over the size limit", b.Len())
		}
		path := writeConfig(t, b.String())
		start := time.Now()
		_, err := Load(path, nil)
		if err == nil || !strings.Contains(err.Error(), "config "+path+": line 2: a mapping of 80000 keys, at most 256 allowed") {
			t.Errorf("Load() = %v, want a mapping-size error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Load() took %v", d)
		}
	})
	t.Run("many small mappings", func(t *testing.T) {
		// Lists of mappings are as long as the file allows: linear.
		var b strings.Builder
		b.WriteString("ipam:\n  pools:\n")
		for i := 0; b.Len() < maxFileSize-100; i++ {
			fmt.Fprintf(&b, "    - {name: p%d, cidr: 10.%d.%d.0/24}\n", i, i/256%256, i%256)
		}
		start := time.Now()
		if _, err := Load(writeConfig(t, b.String()), nil); err == nil || !strings.Contains(err.Error(), "pools, at most 1024 allowed") {
			t.Errorf("Load() = %v, want a pool count error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Load() took %v", d)
		}
	})
}

// A value of any length is shown in an error by its start only: a 10 MB
// value must not become a 10 MB log line.
func TestErrorsTruncateValues(t *testing.T) {
	const maxLine = 400
	huge := strings.Repeat("x", 200_000)
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("Load() = nil, want an error")
		}
		for line := range strings.Lines(err.Error()) {
			if len(line) > maxLine {
				t.Errorf("error line of %d bytes: %.200s…", len(line), line)
			}
		}
	}
	// Every scalar key, from the environment (which takes any string).
	for _, s := range settings(Default()) {
		vars := envVars(s)
		if len(vars) == 0 || s.key == "bgp.meshPassword" {
			continue
		}
		for _, v := range []string{huge, strings.Repeat("9", 200_000)} {
			t.Run(s.key, func(t *testing.T) {
				isolate(t)
				t.Setenv("NODE_NAME", "node-a")
				t.Setenv(vars[0], v)
				_, err := Load("", nil)
				if s.key == "nodeName" || err != nil { // some keys take any string
					check(t, err)
				}
			})
		}
	}
	// And from the file: values, keys, sections, lists.
	for name, yaml := range map[string]string{
		"value":         "log: {level: " + huge[:100_000] + "}\n",
		"unknown key":   huge[:100_000] + ": 1\n",
		"nested key":    "ipam:\n  " + huge[:100_000] + ": 1\n",
		"section":       "log: " + huge[:100_000] + "\n",
		"list":          "log: {level: [" + strings.Repeat("x, ", 100_000) + "x]}\n",
		"list section":  "log: [" + strings.Repeat("x, ", 100_000) + "x]\n",
		"integer list":  "bgp: {asn: [" + strings.Repeat("1, ", 100_000) + "1]}\n",
		"long integer":  "bgp: {asn: " + strings.Repeat("9", 100_000) + "}\n",
		"pool name":     "ipam: {pools: [{name: " + huge[:100_000] + ", cidr: 10.0.0.0/16}]}\n",
		"peer name":     "bgp: {peers: [{name: " + huge[:100_000] + ", address: 192.0.2.1, asn: 65001}]}\n",
		"import prefix": "bgp: {peers: [{name: a, address: 192.0.2.1, asn: 65001, import: {allow: [" + huge[:100_000] + "]}}]}\n",
	} {
		t.Run(name, func(t *testing.T) {
			isolate(t)
			t.Setenv("NODE_NAME", "node-a")
			_, err := Load(writeConfig(t, yaml), nil)
			check(t, err)
		})
	}
}
