package kubenode

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// InitArg is the first argument under which a binary that calls MaybeInit
// runs as a node's first process.
const InitArg = "kubenode-init"

// startTimeout bounds how long a node takes to get its kubelet running:
// containerd's start and the image imports (the machine is shared and slow
// at times).
const startTimeout = 3 * time.Minute

// Start brings the node up: it writes its configuration into n.Dir and runs
// this binary again (MaybeInit) as the node's first process, in the node's
// network namespace and in a new mount and PID namespace, detached from the
// caller. It returns once containerd has the images and the kubelet and
// kube-proxy run; the node registers itself with the API server. On error
// nothing of the node runs.
func Start(n *Node) error {
	if err := n.validate(); err != nil {
		return err
	}
	if n.Running() {
		return fmt.Errorf("node %s: already running (pid file %s)", n.Name, n.pidFile())
	}
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(n.path("ready"))
	if err := n.writeFiles(); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := makeCgroups(n.CgroupRoot); err != nil {
		return errors.Join(fmt.Errorf("node %s: %w", n.Name, err), removeCgroups(n.CgroupRoot))
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.Create(n.Log("init"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(exe, InitArg, n.Dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true, // outlives the lab's command
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
	}
	// The child is forked from this thread, which ns.Do has put in the
	// node's network namespace.
	err = ns.WithNetNSPath(n.NetNS, func(ns.NetNS) error { return cmd.Start() })
	if err != nil {
		return fmt.Errorf("node %s: start: %w", n.Name, err)
	}
	if err := os.WriteFile(n.pidFile(), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(startTimeout)
	for {
		select {
		case err := <-exited:
			_ = n.Stop()
			return fmt.Errorf("node %s: its first process exited (%w) before the kubelet ran: %s", n.Name, err, tail(n.Log("init"), 15))
		case <-deadline:
			_ = n.Stop()
			return fmt.Errorf("node %s: not running after %s: %s", n.Name, startTimeout, tail(n.Log("init"), 15))
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := os.Stat(n.path("ready")); err == nil {
			return nil
		}
	}
}

// tail returns the last lines of a log file, for error messages.
func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	b = bytes.TrimSpace(b)
	for i, n := len(b)-1, 0; i >= 0; i-- {
		if b[i] == '\n' {
			if n++; n == lines {
				b = b[i+1:]
				break
			}
		}
	}
	return fmt.Sprintf("%s:\n%s", path, b)
}

// errStopped is what a node's first process returns when told to stop.
var errStopped = errors.New("stopped")

// Command returns a command that runs in the node: in its network, mount
// and PID namespaces (nsenter), so that it sees the node's /etc, /run, /opt
// and containerd's socket as the node's processes do.
func (n *Node) Command(name string, args ...string) (*exec.Cmd, error) {
	pid, err := n.pid()
	if err != nil {
		return nil, fmt.Errorf("node %s: not running: %w", n.Name, err)
	}
	return exec.Command("nsenter", append([]string{"--target", strconv.Itoa(pid), "--mount", "--net", "--pid", "--", name}, args...)...), nil
}

// PodNetNS returns, for each network namespace of the node's pods, a path
// that opens it from the host (/proc/<pid>/ns/net of a process in it),
// keyed by the addresses in it (global ones, lo's excluded). The pods'
// namespaces are containerd's, mounted in the node's own mount namespace:
// the host reaches them through their processes.
func (n *Node) PodNetNS() (map[netip.Addr]string, error) {
	initPid, err := n.pid()
	if err != nil {
		return nil, fmt.Errorf("node %s: not running: %w", n.Name, err)
	}
	nodeNet, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", initPid))
	if err != nil {
		return nil, err
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := map[int]int{}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if pp, err := ppid(pid); err == nil {
			parent[pid] = pp
		}
	}
	descends := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if pid = parent[pid]; pid == initPid {
				return true
			}
		}
		return false
	}
	seen := map[string]bool{nodeNet: true}
	out := map[netip.Addr]string{}
	for pid := range parent {
		if !descends(pid) {
			continue
		}
		path := fmt.Sprintf("/proc/%d/ns/net", pid)
		id, err := os.Readlink(path)
		if err != nil || seen[id] {
			continue
		}
		seen[id] = true
		addrs, err := nsAddrs(path)
		if err != nil {
			continue // the process is gone
		}
		for _, a := range addrs {
			out[a] = path
		}
	}
	return out, nil
}

func ppid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, errors.New("bad stat")
	}
	return strconv.Atoi(f[1])
}

// nsAddrs lists the global addresses in a network namespace.
func nsAddrs(path string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if ok && ip.Unmap().IsGlobalUnicast() {
				out = append(out, ip.Unmap())
			}
		}
		return nil
	})
	return out, err
}

// Path is where the host reaches a path of the node's mount namespace
// (under /proc/<pid>/root of the node's first process); "" when the node is
// not running.
func (n *Node) Path(p string) string {
	pid, err := n.pid()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("/proc/%d/root%s", pid, p)
}
