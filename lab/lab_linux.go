package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flatnet-io/flatnet/lab/controlplane"
	"github.com/flatnet-io/flatnet/lab/netns"
	"github.com/flatnet-io/flatnet/lab/router"
	"github.com/flatnet-io/flatnet/lab/topology"
)

// agentStartTimeout bounds how long an agent may take to serve its API.
const agentStartTimeout = 15 * time.Second

// Lab is a topology realized, or to be realized, on this machine.
type Lab struct {
	T *topology.Topology
	// Bin holds flatnet-agent, flatnet and flatnetctl.
	Bin string
	// KubeBin holds kube-apiserver (and kubectl, if none is on PATH), for
	// DatastoreKubernetes: the directory `make kube-bins` builds into.
	KubeBin string
	// ImageDir holds the image archives real nodes import (make image:
	// bin/images).
	ImageDir string
	// StateDir holds the lab's files: logs, sockets, the shared datastore,
	// daemon configs, the CNI cache. Default /run/flatnet-lab/<name>.
	StateDir string
	Log      io.Writer
	// Prefix, when set, starts the name of every namespace of the lab
	// instead of NSPrefix(T.Name): tests give each run its own, so that they
	// never touch a lab of the same topology that `make lab` brought up.
	// Sweep(Prefix) removes every namespace whose name starts with it.
	Prefix string
	// Datastore is where the agents keep IPAM and the node registry:
	// DatastoreFile (also when empty), a directory shared by the nodes, or
	// DatastoreKubernetes, an API server the lab runs (kube_linux.go).
	Datastore string

	kube      *controlplane.Server // the lab's API server, with DatastoreKubernetes
	mgmtLinks int                  // management links to the control plane made
}

// starters say what Up starts in a node of each role, in this order: routers
// first, so that the agents' first connection finds them listening rather
// than waiting out GoBGP's connect retry. A role without a starter here
// cannot be brought up (Up says so before it changes anything); a new kind
// of node is a role in lab/topology and a line here.
func (l *Lab) starters() []starter {
	return []starter{
		{topology.RoleFRR, l.startFRR},
		{topology.RoleBIRD, l.startBIRD},
		{topology.RoleFlatnet, l.startAgent},
		{topology.RoleHost, nil}, // its exec lines are all it runs
	}
}

type starter struct {
	role  topology.Role
	start func(context.Context, *topology.Node) error
}

// configOf is the bind each role needs: its daemon's configuration.
var configOf = map[topology.Role]string{
	topology.RoleFlatnet: topology.FlatnetConfigPath,
	topology.RoleFRR:     topology.FRRConfigPath,
	topology.RoleBIRD:    topology.BIRDConfigPath,
}

// NSPrefix starts the name of every namespace of lab name.
func NSPrefix(name string) string { return "flab-" + name + "-" }

// NSPrefix is what starts the name of every namespace of this lab.
func (l *Lab) NSPrefix() string {
	if l.Prefix != "" {
		return l.Prefix
	}
	return NSPrefix(l.T.Name)
}

// NS is the namespace of a node.
func (l *Lab) NS(node string) string { return l.NSPrefix() + node }

func (l *Lab) state(parts ...string) string {
	dir := l.StateDir
	if dir == "" {
		dir = filepath.Join("/run/flatnet-lab", l.T.Name)
	}
	return filepath.Join(append([]string{dir}, parts...)...)
}

// Socket is the agent socket of a flatnet node.
func (l *Lab) Socket(node string) string {
	if l.Real(node) {
		return l.realSocket(node)
	}
	return l.state(node, "flatnet.sock")
}

func (l *Lab) logf(format string, args ...any) {
	if l.Log != nil {
		fmt.Fprintf(l.Log, format+"\n", args...)
	}
}

// Exec runs a command inside a node's (or pod's) namespace.
func (l *Lab) Exec(ns string, args ...string) (string, error) {
	return netns.Exec(ns, args...)
}

// check refuses, before anything is changed, what Up could not bring up:
// an unknown datastore, a node whose role has no starter or lacks its
// configuration, missing binaries.
func (l *Lab) check() error {
	if l.Datastore != "" && l.Datastore != DatastoreFile && !l.kubernetes() {
		return fmt.Errorf("datastore %q: want %s or %s", l.Datastore, DatastoreFile, DatastoreKubernetes)
	}
	for _, n := range l.T.Nodes() {
		if !slices.ContainsFunc(l.starters(), func(s starter) bool { return s.role == n.Role }) {
			return fmt.Errorf("node %s: the lab cannot start role %q", n.Name, n.Role)
		}
		if path, ok := configOf[n.Role]; ok {
			if _, bound := l.T.Bind(n, path); !bound {
				return fmt.Errorf("node %s (%s): no configuration bound at %s", n.Name, n.Role, path)
			}
		}
	}
	if len(l.T.NodesOf(topology.RoleFlatnet)) > 0 {
		for _, b := range []string{"flatnet-agent", "flatnet", "flatnetctl"} {
			if _, err := os.Stat(filepath.Join(l.Bin, b)); err != nil {
				return fmt.Errorf("flatnet nodes need %s: %w (make build)", b, err)
			}
		}
	}
	if err := l.checkReal(); err != nil {
		return err
	}
	if l.kubernetes() {
		return l.checkKube()
	}
	return nil
}

// Up removes whatever an earlier run of the same lab left, then builds it:
// namespaces, links, exec lines, the control plane (with the kubernetes
// datastore), routers, agents. It refuses what it could not build before it
// changes anything; on a later failure it tears down what it built.
func (l *Lab) Up(ctx context.Context) (err error) {
	if err := l.check(); err != nil {
		return err
	}
	if err := l.Down(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			l.logf("up failed, tearing down: %v", err)
			_ = l.Down()
		}
	}()
	if err := os.MkdirAll(l.state(), 0o755); err != nil {
		return err
	}
	for _, n := range l.T.Nodes() {
		if err := netns.Add(l.NS(n.Name)); err != nil {
			return err
		}
	}
	for _, link := range l.T.Topology.Links {
		a, aIf, _ := strings.Cut(link.Endpoints[0], ":")
		b, bIf, _ := strings.Cut(link.Endpoints[1], ":")
		if _, err := netns.Run("ip", "link", "add", "name", aIf, "netns", l.NS(a), "type", "veth", "peer", "name", bIf, "netns", l.NS(b)); err != nil {
			return err
		}
		for _, end := range [][2]string{{a, aIf}, {b, bIf}} {
			if _, err := l.Exec(l.NS(end[0]), "ip", "link", "set", end[1], "up"); err != nil {
				return err
			}
		}
	}
	for _, n := range l.T.Nodes() {
		for _, line := range n.Exec {
			if _, err := l.Exec(l.NS(n.Name), "sh", "-c", line); err != nil {
				return fmt.Errorf("node %s exec: %w", n.Name, err)
			}
		}
	}
	if l.kubernetes() {
		if err := l.startKube(); err != nil {
			return err
		}
	}
	for _, s := range l.starters() {
		for _, n := range l.T.NodesOf(s.role) {
			if s.start == nil {
				continue
			}
			start := s.start
			if s.role == topology.RoleFlatnet && isReal(n) {
				start = l.startRealNode
			}
			if err := start(ctx, n); err != nil {
				return err
			}
		}
	}
	if len(l.realNodes()) > 0 {
		return l.deployFlatnet()
	}
	return nil
}

// Down kills every process in the lab's namespaces, deletes the namespaces
// (and with them every link) and the state directory. It works from the
// kernel's and the file system's state alone, so it cleans up after a crashed
// Up too, and it is not an error when there is nothing to remove.
func (l *Lab) Down() error {
	l.kube, l.mgmtLinks = nil, 0
	err := stopRealNodes(l.NSPrefix())
	err = errors.Join(err, remove(l.Namespaces()))
	if rerr := os.RemoveAll(l.state()); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// Namespaces lists the lab's namespaces: its prefix followed by one of its
// node names, alone (a node's) or followed by "-" (a pod's), or by KubeNode
// (the control plane's). Another lab whose name merely starts with this
// one's ("two-node-tor-bird" and "two-node-tor") is not matched.
func (l *Lab) Namespaces() []string {
	return slices.DeleteFunc(netns.List(l.NSPrefix()), func(ns string) bool {
		return ns != l.NS(KubeNode) && !l.T.Owns(l.NSPrefix(), ns)
	})
}

// Sweep kills every process in the namespaces whose names start with prefix
// and deletes those namespaces, with their links, and FRR's run directories
// for them: what a test uses to remove the leftovers of an earlier run that
// died, when it gave that run a prefix of its own (Lab.Prefix).
func Sweep(prefix string) error {
	if prefix == "" {
		return errors.New("sweep: empty namespace prefix")
	}
	return errors.Join(stopRealNodes(prefix), remove(netns.List(prefix)))
}

// remove kills every process in the namespaces, deletes them and FRR's run
// directories for them.
func remove(nss []string) error {
	err := netns.Remove(nss...)
	for _, ns := range nss {
		if rerr := router.RemoveFRRRunDir(ns); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// startAgent runs flatnet-agent in a flatnet node with the config bound at
// FlatnetConfigPath, its socket in the state directory, and the lab's shared
// file datastore (node registry included), and waits until it serves.
func (l *Lab) startAgent(ctx context.Context, n *topology.Node) error {
	conf, _ := l.T.Bind(n, topology.FlatnetConfigPath)
	if err := os.MkdirAll(l.state(n.Name), 0o755); err != nil {
		return err
	}
	env := []string{
		"FLATNET_NODENAME=" + n.Name,
		"FLATNET_API_SOCKET=" + l.Socket(n.Name),
		"FLATNET_DATASTORE_FILE_DIR=" + l.state("ipam"),
	}
	if l.kubernetes() {
		env = append(env, "FLATNET_DATASTORE_TYPE="+DatastoreKubernetes, "FLATNET_DATASTORE_KUBERNETES_KUBECONFIG="+l.agentKubeconfig())
	}
	for k, v := range n.Env {
		env = append(env, k+"="+v)
	}
	logPath := l.state(n.Name, "agent.log")
	p, err := netns.Start(netns.Options{NetNS: l.NS(n.Name), Env: env, Log: logPath, Detach: true},
		filepath.Join(l.Bin, "flatnet-agent"), "--config", conf)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, agentStartTimeout)
	defer cancel()
	err = p.Await(ctx, "serving on "+l.Socket(n.Name), netns.Serving(l.Socket(n.Name)))
	if err == nil {
		err = os.WriteFile(l.state(n.Name, "agent.pid"), []byte(strconv.Itoa(p.Pid())), 0o644)
	}
	if err != nil {
		p.Kill()
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	l.logf("node %s: flatnet-agent up (log %s)", n.Name, logPath)
	return nil
}

// RestartAgent stops a node's agent (SIGTERM, a planned restart: graceful)
// or kills it (SIGKILL, a crash), and starts it again.
func (l *Lab) RestartAgent(ctx context.Context, node string, kill bool) error {
	n := l.T.Topology.Nodes[node]
	if n == nil || n.Role != topology.RoleFlatnet {
		return fmt.Errorf("restart agent: %s is not a flatnet node", node)
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	b, err := os.ReadFile(l.state(node, "agent.pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("node %s: agent.pid: %w", node, err)
	}
	// The pid is `ip netns exec`, which execs the agent: the same process.
	_ = syscall.Kill(pid, sig)
	for deadline := time.Now().Add(agentStartTimeout); netns.ProcessAlive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: agent %d did not stop", node, pid)
		}
	}
	return l.startAgent(ctx, n)
}

// StopNode makes a node vanish the way a machine that loses power behind a
// switch does: first every packet into, out of and through its namespace is
// dropped (iptables and ip6tables policies), so its peers get no FIN, RST or
// NOTIFICATION and must notice through their hold timers (or BFD); then every
// process in it is killed. Its links stay up and its pods' namespaces stay,
// cut off with it.
func (l *Lab) StopNode(node string) error {
	ns := l.NS(node)
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"INPUT", "OUTPUT", "FORWARD"} {
			if _, err := l.Exec(ns, tool, "-w", "-P", chain, "DROP"); err != nil {
				return fmt.Errorf("node %s: isolate: %w", node, err)
			}
		}
	}
	netns.KillAll(ns)
	return nil
}
