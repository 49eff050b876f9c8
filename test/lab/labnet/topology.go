// Package labnet realizes containerlab topology files with network namespaces
// on one machine: each node a namespace, each link a veth pair, `exec` lines
// run inside the node, FRR and BIRD nodes run the real daemons with their bound
// configuration, flatnet nodes run flatnet-agent, and pods are attached to
// flatnet nodes by calling the CNI plugin through libcni, as a runtime does.
//
// It reads the subset of containerlab's schema the topologies use (name,
// topology.nodes with kind, image, binds, exec, labels, env; topology.links with
// endpoints) and rejects what it does not understand, so a file that runs here
// runs unchanged under `containerlab deploy -t`. It must never touch anything
// outside the namespaces, processes and state directory it made.
package labnet

import (
	"bytes"
	"fmt"
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

// Role is what the runner starts in a node.
type Role string

// Roles. The role comes from the node's label RoleLabel if it has one, else
// from its image: an image with "frr" in its name is an FRR router, "bird" a
// BIRD router, "flatnet" a flatnet node; anything else is a plain host.
const (
	RoleFlatnet Role = "flatnet"
	RoleFRR     Role = "frr"
	RoleBIRD    Role = "bird"
	RoleHost    Role = "host"
)

// RoleLabel names a node's role explicitly.
const RoleLabel = "flatnet.io/role"

// Container paths the runner maps binds to.
const (
	FlatnetConfigPath = "/etc/flatnet/flatnet.yaml" // the agent's config
	FRRConfigPath     = "/etc/frr/frr.conf"         // bgpd's config (bgp only)
	FRRDaemonsPath    = "/etc/frr/daemons"          // bfdd=yes also runs bfdd
	BIRDConfigPath    = "/etc/bird/bird.conf"
	IPAMPath          = "/var/lib/flatnet" // the shared file datastore
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
	for name, n := range t.Topology.Nodes {
		if !nameRE.MatchString(name) {
			return fmt.Errorf("topology.nodes.%s: want a short DNS label", name)
		}
		if n == nil {
			n = &Node{}
			t.Topology.Nodes[name] = n
		}
		n.Name = name
		if n.Kind != "linux" {
			return fmt.Errorf("topology.nodes.%s.kind %q: only linux nodes are supported", name, n.Kind)
		}
		n.Role = roleOf(n)
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

func roleOf(n *Node) Role {
	if r, ok := n.Labels[RoleLabel]; ok {
		return Role(r)
	}
	img := strings.ToLower(n.Image)
	switch {
	case strings.Contains(img, "frr"):
		return RoleFRR
	case strings.Contains(img, "bird"):
		return RoleBIRD
	case strings.Contains(img, "flatnet"):
		return RoleFlatnet
	}
	return RoleHost
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

// owns says whether namespace ns, of a lab whose namespaces start with
// prefix, is one of this topology's: prefix and a node name (a node), or
// prefix, a node name, "-" and more (a pod of that node), or prefix and
// KubeNode (the API server's).
func (t *Topology) owns(prefix, ns string) bool {
	rest, ok := strings.CutPrefix(ns, prefix)
	if !ok {
		return false
	}
	if rest == KubeNode {
		return true
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
	var out []*Node
	for _, n := range t.Topology.Nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NodesOf returns the nodes of one role, sorted by name.
func (t *Topology) NodesOf(r Role) []*Node {
	return slices.DeleteFunc(t.Nodes(), func(n *Node) bool { return n.Role != r })
}

// daemonEnabled reports whether the FRR daemons file bound in router n (at
// FRRDaemonsPath) turns daemon on ("bfdd=yes"). No file: only what the
// runner always starts (zebra, bgpd).
func (t *Topology) daemonEnabled(n *Node, daemon string) (bool, error) {
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
