package labnet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flatnet-io/flatnet/test/harness"
)

// Lab is a topology realized, or to be realized, on this machine.
type Lab struct {
	T *Topology
	// Bin holds flatnet-agent, flatnet and flatnetctl.
	Bin string
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

	kube *harness.Kube // the lab's API server, with DatastoreKubernetes
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
func (l *Lab) Socket(node string) string { return l.state(node, "flatnet.sock") }

func (l *Lab) logf(format string, args ...any) {
	if l.Log != nil {
		fmt.Fprintf(l.Log, format+"\n", args...)
	}
}

// Exec runs a command inside a node's (or pod's) namespace.
func (l *Lab) Exec(ns string, args ...string) (string, error) {
	return harness.Run("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// Up removes whatever an earlier run of the same lab left, then builds it:
// namespaces, links, exec lines, routers, agents. On failure it tears down what
// it built.
func (l *Lab) Up(ctx context.Context) (err error) {
	if l.Datastore != "" && l.Datastore != DatastoreFile && !l.kubernetes() {
		return fmt.Errorf("datastore %q: want %s or %s", l.Datastore, DatastoreFile, DatastoreKubernetes)
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
		if err := l.addNS(l.NS(n.Name)); err != nil {
			return err
		}
	}
	for _, link := range l.T.Topology.Links {
		a, aIf, _ := strings.Cut(link.Endpoints[0], ":")
		b, bIf, _ := strings.Cut(link.Endpoints[1], ":")
		if _, err := harness.Run("ip", "link", "add", "name", aIf, "netns", l.NS(a), "type", "veth", "peer", "name", bIf, "netns", l.NS(b)); err != nil {
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
	// Routers first, so that the agents' first connection finds them
	// listening rather than waiting out GoBGP's connect retry.
	nodes := l.T.Nodes()
	slices.SortStableFunc(nodes, func(a, b *Node) int {
		return cmp.Compare(b2i(a.Role == RoleFlatnet), b2i(b.Role == RoleFlatnet))
	})
	for _, n := range nodes {
		var err error
		switch n.Role {
		case RoleFRR:
			err = l.startFRR(n)
		case RoleBIRD:
			err = l.startBIRD(n)
		case RoleFlatnet:
			err = l.startAgent(ctx, n)
		case RoleHost:
		default:
			err = fmt.Errorf("node %s: unknown role %q", n.Name, n.Role)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// addNS makes a namespace with its loopback up.
func (l *Lab) addNS(ns string) error {
	if _, err := harness.Run("ip", "netns", "add", ns); err != nil {
		return err
	}
	_, err := l.Exec(ns, "ip", "link", "set", "lo", "up")
	return err
}

// Down kills every process in the lab's namespaces, deletes the namespaces
// (and with them every link) and the state directory. It works from the
// kernel's and the file system's state alone, so it cleans up after a crashed
// Up too, and it is not an error when there is nothing to remove.
func (l *Lab) Down() error {
	err := remove(l.Namespaces())
	if rerr := os.RemoveAll(l.state()); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// Namespaces lists the lab's namespaces: its prefix followed by one of its
// node names, alone (a node's) or followed by "-" (a pod's). Another lab
// whose name merely starts with this one's ("two-node-tor-bird" and
// "two-node-tor") is not matched.
func (l *Lab) Namespaces() []string {
	return slices.DeleteFunc(namespaces(l.NSPrefix()), func(ns string) bool { return !l.T.owns(l.NSPrefix(), ns) })
}

// Sweep kills every process in the namespaces whose names start with prefix
// and deletes those namespaces, with their links, and FRR's run directories
// for them: what a test uses to remove the leftovers of an earlier run that
// died, when it gave that run a prefix of its own (Lab.Prefix).
func Sweep(prefix string) error {
	if prefix == "" {
		return errors.New("sweep: empty namespace prefix")
	}
	return remove(namespaces(prefix))
}

// remove kills every process in the namespaces, then deletes them.
func remove(nss []string) error {
	for _, ns := range nss {
		killAll(ns)
	}
	var errs []error
	for _, ns := range nss {
		// Killed processes may take a moment to let go of the namespace.
		for attempt := 0; ; attempt++ {
			_, err := harness.Run("ip", "netns", "del", ns)
			if err == nil || attempt == 20 {
				if err != nil {
					errs = append(errs, err)
				}
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = os.RemoveAll(filepath.Join("/var/run/frr", ns))
	}
	return errors.Join(errs...)
}

func namespaces(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// Pids lists the processes running in a namespace.
func Pids(ns string) []int {
	out, err := harness.Run("ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAll kills every process in a namespace.
func killAll(ns string) {
	for _, pid := range Pids(ns) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// daemon starts a long-running process in a node's namespace, detached from
// the caller, its output in logPath.
func (l *Lab) daemon(ns, logPath string, env []string, args ...string) (*os.Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", args[0], ns, err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it ends while we run
	return cmd.Process, nil
}

// startAgent runs flatnet-agent in a flatnet node with the config bound at
// FlatnetConfigPath, its socket in the state directory, and the lab's shared
// file datastore (node registry included).
func (l *Lab) startAgent(ctx context.Context, n *Node) error {
	conf, ok := l.T.Bind(n, FlatnetConfigPath)
	if !ok {
		return fmt.Errorf("node %s: no config bound at %s", n.Name, FlatnetConfigPath)
	}
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
	proc, err := l.daemon(l.NS(n.Name), logPath, env, filepath.Join(l.Bin, "flatnet-agent"), "--config", conf)
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.state(n.Name, "agent.pid"), []byte(strconv.Itoa(proc.Pid)), 0o644); err != nil {
		return err
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", l.Socket(n.Name)); err == nil {
			c.Close()
			l.logf("node %s: flatnet-agent up (log %s)", n.Name, logPath)
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil || syscall.Kill(proc.Pid, 0) != nil {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("node %s: flatnet-agent did not come up:\n%s", n.Name, b)
		}
	}
}

// RestartAgent stops a node's agent (SIGTERM, a planned restart: graceful)
// or kills it (SIGKILL), and starts it again.
func (l *Lab) RestartAgent(ctx context.Context, node string, kill bool) error {
	b, err := os.ReadFile(l.state(node, "agent.pid"))
	if err != nil {
		return err
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	// The pid is `ip netns exec`, which execs the agent: the same process.
	_ = syscall.Kill(pid, sig)
	for deadline := time.Now().Add(15 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: agent %d did not stop", node, pid)
		}
	}
	return l.startAgent(ctx, l.T.Topology.Nodes[node])
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
	killAll(ns)
	return nil
}

// waitFor waits up to 10 s for a daemon to make path, and returns its log
// when it does not.
func waitFor(path, logPath string) error {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("no %s after 10s:\n%s", path, b)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// frrDir holds an FRR router's per-node files.
func (l *Lab) frrDir(n *Node) string { return l.state(n.Name, "frr") }

// startFRR runs zebra and bgpd in a router's namespace as the frr user, with
// the configuration bound at FRRConfigPath as bgpd's, and bfdd too when the
// daemons file bound at FRRDaemonsPath says bfdd=yes (bgpd's `neighbor X
// bfd` sessions reach it through zebra; it needs no configuration of its
// own for FRR's defaults, 300ms x 3).
func (l *Lab) startFRR(n *Node) error {
	conf, ok := l.T.Bind(n, FRRConfigPath)
	if !ok {
		return fmt.Errorf("node %s: no FRR config bound at %s", n.Name, FRRConfigPath)
	}
	d := l.frrDir(n)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, "bgpd.conf"), b, 0o640); err != nil {
		return err
	}
	if _, err := harness.Run("chown", "-R", "frr:frr", d); err != nil {
		return err
	}
	ns := l.NS(n.Name)
	common := []string{"-N", ns, "-z", filepath.Join(d, "zserv.api"), "--vty_socket", d, "-u", "frr", "-g", "frr", "-P", "0"}
	if _, err := l.daemon(ns, filepath.Join(d, "zebra.log"), nil, append([]string{"/usr/lib/frr/zebra", "-i", filepath.Join(d, "zebra.pid")}, common...)...); err != nil {
		return err
	}
	// bgpd needs zebra's socket.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(d, "zserv.api")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: zebra did not start", n.Name)
		}
	}
	if bfdd, err := l.T.daemonEnabled(n, "bfdd"); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	} else if bfdd {
		args := append([]string{"/usr/lib/frr/bfdd", "-i", filepath.Join(d, "bfdd.pid"), "--bfdctl", filepath.Join(d, "bfdd.sock")}, common...)
		if _, err := l.daemon(ns, filepath.Join(d, "bfdd.log"), nil, args...); err != nil {
			return err
		}
		if err := waitFor(filepath.Join(d, "bfdd.vty"), filepath.Join(d, "bfdd.log")); err != nil {
			return fmt.Errorf("node %s: bfdd: %w", n.Name, err)
		}
	}
	args := append([]string{"/usr/lib/frr/bgpd", "-f", filepath.Join(d, "bgpd.conf"), "-i", filepath.Join(d, "bgpd.pid")}, common...)
	if _, err := l.daemon(ns, filepath.Join(d, "bgpd.log"), nil, args...); err != nil {
		return err
	}
	// bgpd opens its vty socket once it has read its config, by when it
	// listens for BGP too.
	if err := waitFor(filepath.Join(d, "bgpd.vty"), filepath.Join(d, "bgpd.log")); err != nil {
		return fmt.Errorf("node %s: bgpd: %w", n.Name, err)
	}
	l.logf("node %s: FRR up (vtysh --vty_socket %s)", n.Name, d)
	return nil
}

// Vtysh runs an FRR show command on a router.
func (l *Lab) Vtysh(node, command string) (string, error) {
	n := l.T.Topology.Nodes[node]
	return harness.Run("vtysh", "--vty_socket", l.frrDir(n), "-c", command)
}

// VtyshJSON runs a vtysh command ending in "json" and decodes its output.
func (l *Lab) VtyshJSON(node, command string, v any) error {
	out, err := l.Vtysh(node, command)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

// startBIRD runs bird in a router's namespace with the configuration bound at
// BIRDConfigPath.
func (l *Lab) startBIRD(n *Node) error {
	conf, ok := l.T.Bind(n, BIRDConfigPath)
	if !ok {
		return fmt.Errorf("node %s: no BIRD config bound at %s", n.Name, BIRDConfigPath)
	}
	d := l.state(n.Name, "bird")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	if _, err := l.daemon(l.NS(n.Name), filepath.Join(d, "bird.log"), nil, "bird", "-f", "-c", conf,
		"-s", filepath.Join(d, "bird.ctl"), "-P", filepath.Join(d, "bird.pid")); err != nil {
		return err
	}
	if err := waitFor(filepath.Join(d, "bird.ctl"), filepath.Join(d, "bird.log")); err != nil {
		return fmt.Errorf("node %s: bird: %w", n.Name, err)
	}
	l.logf("node %s: BIRD up (birdc -s %s)", n.Name, filepath.Join(d, "bird.ctl"))
	return nil
}

// Birdc runs a BIRD command on a router.
func (l *Lab) Birdc(node, command string) (string, error) {
	return harness.Run("birdc", append([]string{"-s", l.state(node, "bird", "bird.ctl")}, strings.Fields(command)...)...)
}
