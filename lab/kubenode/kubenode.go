// Package kubenode runs real Kubernetes nodes for the lab: in a node's network
// namespace, Debian's containerd, a kubelet and kube-proxy (upstream, built by
// make kube-bins) share one private mount namespace and one PID namespace, so
// that the paths a DaemonSet mounts from the host (/opt/cni/bin,
// /etc/cni/net.d, /run/flatnet, /var/lib/cni) are the node's own and killing
// the node's first process ends every process of the node, pods included.
// It also runs the control plane's controller-manager and scheduler next to
// an API server the caller started.
//
// It must not touch anything of the host but what it made: its directories,
// the cgroups under the kubelet's cgroup root, the processes it started.
// Settings come from shared/PLATFORM.md ("Real kubelet and containerd"):
// each one was needed on these machines (root without CAP_SYS_RESOURCE,
// cgroup v1, no systemd, no image registry).
package kubenode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Node describes one real node.
type Node struct {
	// Name is the node's name: the Node object's, lowercase (RFC 1123).
	Name string `json:"name"`
	// NetNS is the path of the node's network namespace (/run/netns/<ns>).
	NetNS string `json:"netns"`
	// Dir is the node's own directory: configs, logs, containerd's root and
	// state, the overlays' upper layers. It must not be under a directory
	// the node overlays (see Overlaid), and short: containerd's socket is in
	// it (a unix socket path has at most 107 bytes).
	Dir string `json:"dir"`
	// CgroupRoot is the kubelet's cgroup root, unique on the machine
	// (two kubelets would share /kubepods): e.g. /flatnet-lab-<lab>-<node>.
	CgroupRoot string `json:"cgroupRoot"`
	// NodeIPs are the node's addresses, one per family at most: the Node
	// object's InternalIPs.
	NodeIPs []netip.Addr `json:"nodeIPs"`
	// Server is the API server's URL, CAFile its CA; KubeletToken and
	// ProxyToken authenticate the kubelet (as system:node:<Name>) and
	// kube-proxy (as system:kube-proxy).
	Server       string `json:"server"`
	CAFile       string `json:"caFile"`
	KubeletToken string `json:"kubeletToken"`
	ProxyToken   string `json:"proxyToken"`
	// KubeBin is the directory of the kubelet and kube-proxy binaries.
	KubeBin string `json:"kubeBin"`
	// ClusterCIDRs are the pod pools: kube-proxy masquerades Service
	// traffic from anywhere else.
	ClusterCIDRs []netip.Prefix `json:"clusterCIDRs"`
	// ClusterDNS is the DNS Service's address the kubelet gives pods.
	ClusterDNS netip.Addr `json:"clusterDNS"`
	// CNIBinSeed, when set, is a directory of CNI plugins copied into the
	// node's empty /opt/cni/bin before anything runs: a node whose runtime
	// was installed with older plugins (Debian's, in /usr/lib/cni).
	CNIBinSeed string `json:"cniBinSeed,omitempty"`
	// Images are image archives (docker-archive tarballs) imported into
	// containerd before the kubelet starts: there is no registry.
	Images []string `json:"images"`
	// Labels are the Node object's labels, set by the kubelet at
	// registration.
	Labels map[string]string `json:"labels,omitempty"`
}

// Binaries the node runs besides the kubelet and kube-proxy (Debian's
// packages: make deps).
var (
	ContainerdPath = "/usr/bin/containerd"
	CtrPath        = "/usr/bin/ctr"
	RuncPath       = "/usr/sbin/runc"
)

// Overlaid are the directories a node sees through an overlay of its own:
// what the node's processes write there stays the node's.
var Overlaid = []string{"/etc", "/run", "/opt", "/var/log", "/var/lib"}

// SandboxImage is the pause image containerd starts every pod with.
const SandboxImage = "registry.k8s.io/pause:3.10"

func (n *Node) path(parts ...string) string {
	return filepath.Join(append([]string{n.Dir}, parts...)...)
}

// Socket is containerd's socket, reachable from the host (ctr -a, crictl).
func (n *Node) Socket() string { return n.path("containerd.sock") }

// Log is the path of one of the node's logs: init, containerd, kubelet,
// kube-proxy.
func (n *Node) Log(name string) string { return n.path("log", name+".log") }

func (n *Node) pidFile() string { return n.path("init.pid") }

func (n *Node) validate() error {
	var errs []error
	if n.Name == "" || strings.ToLower(n.Name) != n.Name {
		errs = append(errs, fmt.Errorf("name %q: want a lowercase node name", n.Name))
	}
	if !filepath.IsAbs(n.Dir) {
		errs = append(errs, fmt.Errorf("dir %q: not absolute", n.Dir))
	}
	for _, o := range Overlaid {
		if n.Dir == o || strings.HasPrefix(n.Dir, o+"/") {
			errs = append(errs, fmt.Errorf("dir %s: under %s, which the node overlays", n.Dir, o))
		}
	}
	if len(n.Socket()) > 100 {
		errs = append(errs, fmt.Errorf("dir %s: too long for containerd's socket path", n.Dir))
	}
	if !strings.HasPrefix(n.CgroupRoot, "/") || strings.Count(n.CgroupRoot, "/") != 1 {
		errs = append(errs, fmt.Errorf("cgroupRoot %q: want /<name>", n.CgroupRoot))
	}
	if len(n.NodeIPs) == 0 || len(n.NodeIPs) > 2 {
		errs = append(errs, fmt.Errorf("nodeIPs %v: want one or two (one per family)", n.NodeIPs))
	}
	for _, f := range []string{n.NetNS, n.CAFile, filepath.Join(n.KubeBin, "kubelet"), filepath.Join(n.KubeBin, "kube-proxy"), ContainerdPath, CtrPath, RuncPath} {
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range n.Images {
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("image: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// Running reports whether the node's first process, from its pid file, is
// alive.
func (n *Node) Running() bool {
	pid, err := n.pid()
	return err == nil && syscall.Kill(pid, 0) == nil
}

func (n *Node) pid() (int, error) {
	b, err := os.ReadFile(n.pidFile())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Stop ends every process of the node (its PID namespace dies with its
// first process), waits for them, and removes the kubelet's cgroups. The
// node's directory stays, for its logs; Remove deletes it. A node that is
// not running is not an error.
func (n *Node) Stop() error {
	if pid, err := n.pid(); err == nil {
		if isProcess(pid, InitArg) && syscall.Kill(pid, syscall.SIGKILL) == nil {
			waitGone(pid, 30*time.Second)
		}
		_ = os.Remove(n.pidFile())
	}
	return removeCgroups(n.CgroupRoot)
}

// Remove stops the node and deletes its directory.
func (n *Node) Remove() error {
	err := n.Stop()
	return errors.Join(err, os.RemoveAll(n.Dir))
}

// waitGone waits until pid is no more (or a zombie) or d has passed.
func waitGone(pid int, d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// The state follows the command's closing parenthesis.
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return
		}
	}
}

// removeCgroups removes root and everything below it in every cgroup
// hierarchy: the kubelet's QoS and pod cgroups, empty once the node's
// processes are gone. A process that is still there leaves its cgroup, and
// that is an error.
func removeCgroups(root string) error {
	if root == "" || root == "/" {
		return nil
	}
	hierarchies, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hierarchies {
		dir := filepath.Join(h, root)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // deepest first
			var rmErr error
			for range 50 { // a cgroup empties a moment after its last process dies
				if rmErr = syscall.Rmdir(dirs[i]); rmErr == nil || errors.Is(rmErr, syscall.ENOENT) {
					rmErr = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if rmErr != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], rmErr))
			}
		}
	}
	return errors.Join(errs...)
}

// writeJSON writes v as the node's description, which its first process
// reads.
func (n *Node) writeJSON() error {
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(n.path("node.json"), b, 0o600)
}

func readNode(dir string) (*Node, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		return nil, err
	}
	var n Node
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "node.json"), err)
	}
	return &n, nil
}

// makeCgroups creates root in every cgroup hierarchy: the kubelet wants its
// cgroup root to exist. A new cpuset cgroup starts with no CPUs and no memory
// nodes in cgroup v1: it gets its parent's.
func makeCgroups(root string) error {
	hierarchies, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	for _, h := range hierarchies {
		if st, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil || st.IsDir() {
			continue // not a hierarchy
		}
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("make cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %s: %w", dir, f, err)
			}
		}
	}
	return nil
}

// RemoveDir stops the node whose directory dir is, from what the directory
// holds (a node of an earlier run too), and deletes the directory.
func RemoveDir(dir string) error {
	n, err := readNode(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return os.RemoveAll(dir)
		}
		return err
	}
	n.Dir = dir
	return n.Remove()
}
