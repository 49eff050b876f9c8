// Package topology reads containerlab topology files: the subset of
// containerlab's schema the lab runs (name; topology.nodes with kind, image,
// binds, exec, labels, env; topology.links with endpoints). It rejects what
// it does not understand, so a file that runs in the lab runs unchanged
// under `containerlab deploy -t`, and it gives each node the role that says
// what the lab starts in it. It finds topology files by path or by name. It
// reads files only: it must not start, make or change anything.
package topology

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Topology is a containerlab topology file.
type Topology struct {
	Name     string `yaml:"name"`
	Topology struct {
		Nodes map[string]*Node `yaml:"nodes"`
		Links []Link           `yaml:"links"`
	} `yaml:"topology"`

	// Dir is the directory of the file: binds are relative to it.
	Dir string `yaml:"-"`
}

// Node is one node of a topology.
type Node struct {
	Kind   string            `yaml:"kind"`
	Image  string            `yaml:"image"`
	Binds  []string          `yaml:"binds"`
	Exec   []string          `yaml:"exec"`
	Labels map[string]string `yaml:"labels"`
	Env    map[string]string `yaml:"env"`

	Name string `yaml:"-"`
	Role Role   `yaml:"-"`
}

// Link joins two node interfaces: "node1:eth1", "tor:eth2".
type Link struct {
	Endpoints []string `yaml:"endpoints"`
}

// Kinds are the containerlab node kinds the lab runs: a kind is how
// containerlab runs a node (a Linux container, a router's VM image, ...),
// not what runs in it — that is the node's Role.
var Kinds = []string{"linux"}

// Role is what the lab starts in a node.
type Role string

// The roles.
const (
	RoleFlatnet Role = "flatnet" // flatnet-agent; pods through the CNI plugin
	RoleFRR     Role = "frr"     // FRR's zebra and bgpd
	RoleBIRD    Role = "bird"    // BIRD
	RoleHost    Role = "host"    // nothing but its exec lines
)

// RoleLabel names a node's role explicitly.
const RoleLabel = "flatnet.io/role"

// roles are the roles a node can have, in the order its image's name is
// matched against their hints when it has no RoleLabel: an image with "frr"
// in its name is an FRR router, "bird" a BIRD router, "flatnet" a flatnet
// node; any other a plain host. A new kind of node for the lab is an entry
// here and a start function in the runner (lab.Lab.Up).
var roles = []struct {
	role      Role
	imageHint string // "": chosen by label only
}{
	{RoleFRR, "frr"},
	{RoleBIRD, "bird"},
	{RoleFlatnet, "flatnet"},
	{RoleHost, ""},
}

// Roles lists the roles a node can have.
func Roles() []Role {
	var out []Role
	for _, r := range roles {
		out = append(out, r.role)
	}
	return out
}

// Container paths the lab maps binds to.
const (
	FlatnetConfigPath = "/etc/flatnet/flatnet.yaml" // the agent's config
	FRRConfigPath     = "/etc/frr/frr.conf"         // bgpd's config (bgp only)
	FRRDaemonsPath    = "/etc/frr/daemons"          // bfdd=yes also runs bfdd
	BIRDConfigPath    = "/etc/bird/bird.conf"
)

// Names of nodes are short DNS labels (at most 15 characters, an interface
// name's limit); the lab's name is any DNS label.
var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`)
	labNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Load reads and checks a topology file.
func Load(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t := &Topology{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.Dir = filepath.Dir(path)
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func (t *Topology) check() error {
	if !labNameRE.MatchString(t.Name) {
		return fmt.Errorf("name %q: want a DNS label (a-z, 0-9, -; at most 63 characters)", t.Name)
	}
	if len(t.Topology.Nodes) == 0 {
		return fmt.Errorf("topology.nodes: none")
	}
	for _, name := range slices.Sorted(maps.Keys(t.Topology.Nodes)) {
		n := t.Topology.Nodes[name]
		if !nameRE.MatchString(name) {
			return fmt.Errorf("topology.nodes.%s: want a short DNS label", name)
		}
		if n == nil {
			n = &Node{}
			t.Topology.Nodes[name] = n
		}
		n.Name = name
		if !slices.Contains(Kinds, n.Kind) {
			return fmt.Errorf("topology.nodes.%s.kind %q: the lab runs kind %s", name, n.Kind, strings.Join(Kinds, ", "))
		}
		role, err := roleOf(n)
		if err != nil {
			return fmt.Errorf("topology.nodes.%s: %w", name, err)
		}
		n.Role = role
		for _, b := range n.Binds {
			host, _, ok := strings.Cut(b, ":")
			if !ok {
				return fmt.Errorf("topology.nodes.%s.binds %q: want host-path:container-path", name, b)
			}
			if _, err := os.Stat(t.hostPath(host)); err != nil && !strings.HasPrefix(host, "__") {
				return fmt.Errorf("topology.nodes.%s.binds %q: %w", name, b, err)
			}
		}
	}
	seen := map[string]bool{}
	for i, l := range t.Topology.Links {
		if len(l.Endpoints) != 2 {
			return fmt.Errorf("topology.links[%d]: want two endpoints", i)
		}
		for _, ep := range l.Endpoints {
			node, ifname, ok := strings.Cut(ep, ":")
			if !ok || t.Topology.Nodes[node] == nil || ifname == "" || len(ifname) > 15 {
				return fmt.Errorf("topology.links[%d]: endpoint %q: want node:interface of a known node", i, ep)
			}
			if seen[ep] {
				return fmt.Errorf("topology.links[%d]: endpoint %q used twice", i, ep)
			}
			seen[ep] = true
		}
	}
	return nil
}

// roleOf gives a node its role: its RoleLabel, which must name a known
// role, else the first role whose hint its image's name contains.
func roleOf(n *Node) (Role, error) {
	if r, ok := n.Labels[RoleLabel]; ok {
		if !slices.Contains(Roles(), Role(r)) {
			return "", fmt.Errorf("labels.%s %q: want one of %v", RoleLabel, r, Roles())
		}
		return Role(r), nil
	}
	img := strings.ToLower(n.Image)
	for _, r := range roles {
		if r.imageHint != "" && strings.Contains(img, r.imageHint) {
			return r.role, nil
		}
	}
	return RoleHost, nil
}

// hostPath resolves a bind's host side against the file's directory.
func (t *Topology) hostPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(t.Dir, p)
}

// Bind returns the host path bound at containerPath in node n, if any.
func (t *Topology) Bind(n *Node, containerPath string) (string, bool) {
	for _, b := range n.Binds {
		host, ctr, _ := strings.Cut(b, ":")
		ctr, _, _ = strings.Cut(ctr, ":") // drop ":ro"
		if ctr == containerPath {
			return t.hostPath(host), true
		}
	}
	return "", false
}

// Owns says whether namespace ns, of a lab whose namespaces start with
// prefix, is one of this topology's nodes' or their pods': prefix and a node
// name (a node), or prefix, a node name, "-" and more (a pod of that node).
func (t *Topology) Owns(prefix, ns string) bool {
	rest, ok := strings.CutPrefix(ns, prefix)
	if !ok {
		return false
	}
	for name := range t.Topology.Nodes {
		if rest == name || strings.HasPrefix(rest, name+"-") {
			return true
		}
	}
	return false
}

// Nodes returns the nodes sorted by name.
func (t *Topology) Nodes() []*Node {
	return slices.SortedFunc(maps.Values(t.Topology.Nodes), func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
}

// NodesOf returns the nodes of one role, sorted by name.
func (t *Topology) NodesOf(r Role) []*Node {
	return slices.DeleteFunc(t.Nodes(), func(n *Node) bool { return n.Role != r })
}

// DaemonEnabled reports whether the FRR daemons file bound in router n (at
// FRRDaemonsPath) turns daemon on ("bfdd=yes"). No file: only what the
// runner always starts (zebra, bgpd).
func (t *Topology) DaemonEnabled(n *Node, daemon string) (bool, error) {
	path, ok := t.Bind(n, FRRDaemonsPath)
	if !ok {
		return false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.TrimSpace(k) == daemon {
			return strings.TrimSpace(v) == "yes", nil
		}
	}
	return false, nil
}
