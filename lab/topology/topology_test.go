package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLoadTopologies loads every topology of the repository and checks the
// roles the runner gives its nodes.
func TestLoadTopologies(t *testing.T) {
	dir := filepath.Join("..", "..", "test", "topologies")
	tests := []struct {
		name  string
		roles map[string]Role
	}{
		{"two-node-tor", map[string]Role{"tor": RoleFRR, "node1": RoleFlatnet, "node2": RoleFlatnet}},
		{"two-node-tor-bird", map[string]Role{"tor": RoleBIRD, "node1": RoleFlatnet, "node2": RoleFlatnet}},
		{"three-node-mesh", map[string]Role{"sw": RoleHost, "node1": RoleFlatnet, "node2": RoleFlatnet, "node3": RoleFlatnet}},
		{"rack-pair", map[string]Role{
			"tor1": RoleFRR, "tor2": RoleFRR,
			"node1": RoleFlatnet, "node2": RoleFlatnet, "node3": RoleFlatnet, "node4": RoleFlatnet,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := Load(filepath.Join(dir, tt.name, tt.name+".clab.yml"))
			if err != nil {
				t.Fatal(err)
			}
			if tp.Name != tt.name {
				t.Errorf("name %q, want %q (the file's name)", tp.Name, tt.name)
			}
			roles := map[string]Role{}
			for _, n := range tp.Nodes() {
				roles[n.Name] = n.Role
				conf := map[Role]string{RoleFlatnet: FlatnetConfigPath, RoleFRR: FRRConfigPath, RoleBIRD: BIRDConfigPath}[n.Role]
				if _, ok := tp.Bind(n, conf); conf != "" && !ok {
					t.Errorf("node %s (%s) binds nothing at %s", n.Name, n.Role, conf)
				}
			}
			if diff := cmp.Diff(tt.roles, roles); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOwns checks that a lab claims its own namespaces only, not those of a
// lab whose name starts with its name.
func TestOwns(t *testing.T) {
	tp := &Topology{Name: "two-node-tor"}
	tp.Topology.Nodes = map[string]*Node{"tor": {}, "node1": {}, "node2": {}}
	prefix := "flab-" + tp.Name + "-"
	tests := []struct {
		ns   string
		want bool
	}{
		{"flab-two-node-tor-tor", true},
		{"flab-two-node-tor-node1", true},
		{"flab-two-node-tor-node1-pod2", true},
		{"flab-two-node-tor-bird-tor", false}, // lab two-node-tor-bird
		{"flab-two-node-tor-bird-node1-pod1", false},
		{"flab-two-node-tor-node3", false},
		{"flab-two-node-tor-", false},
		{"flab-other-node1", false},
	}
	for _, tt := range tests {
		if got := tp.Owns(prefix, tt.ns); got != tt.want {
			t.Errorf("owns(%q) = %v, want %v", tt.ns, got, tt.want)
		}
	}
}

// TestLabName accepts the names of the repository's topologies and rejects
// what is no DNS label.
func TestLabName(t *testing.T) {
	for name, want := range map[string]bool{
		"two-node-tor-bird": true, "a": true, "rack-pair": true,
		"": false, "-x": false, "x-": false, "Two": false, "a_b": false,
		"a234567890123456789012345678901234567890123456789012345678901234": false, // 64
	} {
		if got := labNameRE.MatchString(name); got != want {
			t.Errorf("lab name %q accepted: %v, want %v", name, got, want)
		}
	}
}

// TestLoadRejects shows that a file the lab cannot run is refused with a
// reason that names the key.
func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "name: x\ntopology:\n  nodes:\n    a: {kind: linux, imag: foo}\n", "field imag not found"},
		{"kind", "name: x\ntopology:\n  nodes:\n    a: {kind: srl}\n", `topology.nodes.a.kind "srl": the lab runs kind linux`},
		{"role", "name: x\ntopology:\n  nodes:\n    a: {kind: linux, labels: {flatnet.io/role: router}}\n", `topology.nodes.a: labels.flatnet.io/role "router": want one of [frr bird flatnet host]`},
		{"link", "name: x\ntopology:\n  nodes:\n    a: {kind: linux}\n  links:\n    - endpoints: [a:eth1, b:eth1]\n", `endpoint "b:eth1": want node:interface of a known node`},
		{"name", "name: X\ntopology:\n  nodes:\n    a: {kind: linux}\n", `name "X": want a DNS label`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.clab.yml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestRoleByLabelAndImage gives a label precedence over the image's name.
func TestRoleByLabelAndImage(t *testing.T) {
	for _, tt := range []struct {
		n    Node
		want Role
	}{
		{Node{Image: "quay.io/frrouting/frr:8.4.0"}, RoleFRR},
		{Node{Image: "ghcr.io/srl-labs/bird:2.13"}, RoleBIRD},
		{Node{Image: "ghcr.io/flatnet-io/flatnet-node:latest"}, RoleFlatnet},
		{Node{Image: "ghcr.io/hellt/network-multitool"}, RoleHost},
		{Node{Image: "quay.io/frrouting/frr:8.4.0", Labels: map[string]string{RoleLabel: "host"}}, RoleHost},
	} {
		if got, err := roleOf(&tt.n); err != nil || got != tt.want {
			t.Errorf("role of %+v: %q, %v; want %q", tt.n, got, err, tt.want)
		}
	}
}

func TestDaemonEnabled(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("with", "zebra=yes\nbgpd=yes\n bfdd = yes\n")
	write("without", "bgpd=yes\nbfdd=no\n")
	tp := &Topology{Dir: dir}
	for _, tc := range []struct {
		binds []string
		want  bool
	}{
		{[]string{"with:" + FRRDaemonsPath}, true},
		{[]string{"without:" + FRRDaemonsPath + ":ro"}, false},
		{nil, false},
	} {
		got, err := tp.DaemonEnabled(&Node{Binds: tc.binds}, "bfdd")
		if err != nil || got != tc.want {
			t.Errorf("DaemonEnabled(binds %v, bfdd) = %v, %v; want %v", tc.binds, got, err, tc.want)
		}
	}
}
