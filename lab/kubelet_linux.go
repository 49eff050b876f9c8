package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flatnet-io/flatnet/deploy"
	"github.com/flatnet-io/flatnet/lab/controlplane"
	"github.com/flatnet-io/flatnet/lab/kubenode"
	"github.com/flatnet-io/flatnet/lab/topology"
)

// Real nodes: a flatnet node labelled RealNodeLabel="true" in the topology is
// a Kubernetes node as users run one (lab/kubenode): containerd, a kubelet
// and kube-proxy in its namespace. The lab runs the control plane (API
// server, controller-manager, scheduler) and applies deploy/ unchanged
// (kubectl apply --server-side -k), so the agents are the DaemonSet's pods,
// the CNI plugin is installed by its init container and called by
// containerd. What is per node comes from the node's flatnet.yaml: its
// addresses (the kubelet's --node-ip) and its bgp.peers, made BGPPeer objects
// for that node with their passwords in the Secret flatnet-bgp-passwords.

// RealNodeLabel marks a flatnet node of a topology as a real node.
const RealNodeLabel = "flatnet.io/kubelet"

// ServiceCIDR is the API server's Service range (controlplane's).
var ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")

// realNodeDirRoot holds the real nodes' directories: not under a directory
// a node overlays (/run, /var/lib), on a disk (containerd's images).
const realNodeDirRoot = "/var/tmp/flatnet-lab"

// rolloutTimeout bounds the DaemonSet's rollout and the nodes turning Ready.
const rolloutTimeout = 4 * time.Minute

func isReal(n *topology.Node) bool { return n.Labels[RealNodeLabel] == "true" }

// realNodes are the topology's real nodes.
func (l *Lab) realNodes() []*topology.Node {
	return slices.DeleteFunc(l.T.NodesOf(topology.RoleFlatnet), func(n *topology.Node) bool { return !isReal(n) })
}

// Real reports whether node is a real node.
func (l *Lab) Real(node string) bool {
	n := l.T.Topology.Nodes[node]
	return n != nil && n.Role == topology.RoleFlatnet && isReal(n)
}

func kubeletToken(node string) string { return "flatnet-lab-kubelet-" + node }

const kubeProxyToken = "flatnet-lab-kube-proxy"

// controlPlaneOptions adds what real nodes need of the API server.
func (l *Lab) controlPlaneOptions(opts controlplane.Options) controlplane.Options {
	real := l.realNodes()
	if len(real) == 0 {
		return opts
	}
	opts.Nodes = true
	for _, n := range real {
		opts.Tokens = append(opts.Tokens, controlplane.Token{Token: kubeletToken(n.Name), User: "system:node:" + n.Name, Groups: []string{"system:nodes"}})
	}
	opts.Tokens = append(opts.Tokens, controlplane.Token{Token: kubeProxyToken, User: "system:kube-proxy"})
	return opts
}

// KubeNode is the lab's handle on a real node.
func (l *Lab) KubeNode(node string) (*kubenode.Node, error) {
	n := l.T.Topology.Nodes[node]
	if n == nil || !l.Real(node) {
		return nil, fmt.Errorf("node %s: not a real node of lab %s", node, l.T.Name)
	}
	if l.kube == nil {
		return nil, fmt.Errorf("node %s: the lab's control plane is not up (or not attached)", node)
	}
	addrs, err := l.bgpAddrs(n)
	if err != nil {
		return nil, err
	}
	images := make([]string, len(labImages))
	for i, img := range labImages {
		images[i] = filepath.Join(l.ImageDir, img)
	}
	var cidrs []netip.Prefix
	for _, c := range []string{"10.244.0.0/16", "fd00:10:244::/56"} { // deploy/agent/flatnet.yaml's pools
		cidrs = append(cidrs, netip.MustParsePrefix(c))
	}
	name := l.NS(node)
	return &kubenode.Node{
		Name: node, NetNS: "/run/netns/" + name, Dir: filepath.Join(realNodeDirRoot, name), CgroupRoot: "/" + name,
		NodeIPs: addrs, Server: l.kube.URL, CAFile: l.kube.CAFile,
		KubeletToken: kubeletToken(node), ProxyToken: kubeProxyToken, KubeBin: l.KubeBin,
		ClusterCIDRs: cidrs, ClusterDNS: ClusterDNS,
		// Debian's reference plugins 1.1.1, as a node whose runtime brought
		// its own: the DaemonSet must not depend on them.
		CNIBinSeed: "/usr/lib/cni",
		Images:     images,
	}, nil
}

// labImages are the image archives every real node imports (make image).
var labImages = []string{"flatnet.tar", "pause.tar", "echo.tar", "coredns.tar"}

// checkReal refuses, before anything changes, real nodes the machine cannot run.
func (l *Lab) checkReal() error {
	if len(l.realNodes()) == 0 {
		return nil
	}
	if !l.kubernetes() {
		return fmt.Errorf("real nodes (label %s) need the kubernetes datastore: --datastore kubernetes", RealNodeLabel)
	}
	var missing []string
	for _, p := range []string{kubenode.ContainerdPath, kubenode.CtrPath, kubenode.RuncPath, "/usr/sbin/nft", "/usr/bin/nsenter",
		filepath.Join(l.KubeBin, "kubelet"), filepath.Join(l.KubeBin, "kube-proxy"),
		filepath.Join(l.KubeBin, "kube-controller-manager"), filepath.Join(l.KubeBin, "kube-scheduler")} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p+" (make deps kube-bins)")
		}
	}
	for _, img := range labImages {
		if _, err := os.Stat(filepath.Join(l.ImageDir, img)); err != nil {
			missing = append(missing, filepath.Join(l.ImageDir, img)+" (make image)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("real nodes need: %s", strings.Join(missing, ", "))
	}
	return nil
}

// prepareRealNode routes what a real node sends to Services and the API
// server over its management link (it has no default route), masquerading
// pods there: the control plane's namespace routes only the nodes'
// management addresses back; and lets the API server reach the kubelet at
// the node's addresses (kubectl logs, exec).
func (l *Lab) prepareRealNode(n *topology.Node, i int) error {
	addrs, err := l.bgpAddrs(n)
	if err != nil {
		return err
	}
	mgmt := mgmtAddr(i).String()
	cmds := [][]string{
		{l.NS(n.Name), "ip", "route", "add", ServiceCIDR.String(), "dev", mgmtIf, "src", mgmt},
		{l.NS(n.Name), "nft", "add table ip flatnet-lab; add chain ip flatnet-lab mgmt-masq { type nat hook postrouting priority srcnat; }; add rule ip flatnet-lab mgmt-masq oifname " + mgmtIf + " masquerade"},
	}
	for _, a := range addrs {
		if a.Is4() {
			cmds = append(cmds, []string{l.NS(KubeNode), "ip", "route", "add", a.String() + "/32", "dev", fmt.Sprintf("k8s%d", i), "src", kubeAddr.String()})
		}
	}
	for _, c := range cmds {
		if _, err := l.Exec(c[0], c[1:]...); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// startRealNode brings up a real node (it registers itself).
func (l *Lab) startRealNode(_ context.Context, n *topology.Node) error {
	kn, err := l.KubeNode(n.Name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(realNodeDirRoot, 0o755); err != nil {
		return err
	}
	if err := kubenode.Start(kn); err != nil {
		return err
	}
	l.logf("node %s: containerd, kubelet and kube-proxy up (logs in %s)", n.Name, filepath.Dir(kn.Log("kubelet")))
	return nil
}

// stopRealNodes stops the lab's real nodes, also those an earlier run left,
// and removes their directories.
func stopRealNodes(prefix string) error {
	dirs, err := filepath.Glob(filepath.Join(realNodeDirRoot, prefix+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		errs = append(errs, kubenode.RemoveDir(d))
	}
	return errors.Join(errs...)
}

// deployFlatnet starts the controller-manager and scheduler, applies
// deploy/ as it is, the BGPPeer objects and their passwords, and waits until
// the DaemonSet has rolled out and every node is Ready.
func (l *Lab) deployFlatnet() error {
	k := l.kube
	cp := &kubenode.ControlPlane{NetNS: l.NS(KubeNode), Dir: l.state(KubeNode, "control-plane"), KubeBin: l.KubeBin,
		Server: k.URL, CAFile: k.CAFile, Token: controlplane.AdminToken, ServiceAccountKey: k.PKI.ServiceAccountKey}
	if err := kubenode.StartControlPlane(cp); err != nil {
		return err
	}
	dir := l.DeployDir()
	if err := fs.WalkDir(deploy.Kustomization, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := deploy.Kustomization.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	}); err != nil {
		return err
	}
	peers, secret, err := l.peerObjects()
	if err != nil {
		return err
	}
	if err := k.Apply(secret); err != nil {
		return err
	}
	if _, err := k.Kubectl("apply", "--server-side", "-k", dir); err != nil {
		return err
	}
	if err := k.Apply(peers); err != nil {
		return err
	}
	timeout := fmt.Sprintf("--timeout=%s", rolloutTimeout)
	if _, err := k.Kubectl("-n", "kube-system", "rollout", "status", "daemonset/flatnet", timeout); err != nil {
		return fmt.Errorf("the flatnet DaemonSet did not roll out: %w", err)
	}
	if _, err := k.Kubectl("wait", "--for=condition=Ready", "node", "--all", timeout); err != nil {
		return fmt.Errorf("nodes not Ready: %w", err)
	}
	l.logf("flatnet DaemonSet rolled out; every node Ready")
	if err := l.deployDNS(); err != nil {
		return err
	}
	l.logf("cluster DNS (CoreDNS) at %s", ClusterDNS)
	return nil
}

// peerObjects makes a BGPPeer object for each peer in a real node's
// flatnet.yaml, for that node, and the Secret with their passwords.
func (l *Lab) peerObjects() (peers, secret []byte, err error) {
	var b strings.Builder
	data := map[string]string{}
	for _, n := range l.realNodes() {
		conf, _ := l.T.Bind(n, topology.FlatnetConfigPath)
		raw, err := os.ReadFile(conf)
		if err != nil {
			return nil, nil, err
		}
		var c struct {
			BGP struct {
				Peers []struct {
					Name              string `yaml:"name"`
					Address           string `yaml:"address"`
					ASN               uint32 `yaml:"asn"`
					Password          string `yaml:"password"`
					HoldTime          string `yaml:"holdTime"`
					KeepaliveInterval string `yaml:"keepaliveInterval"`
					MaxPrefixes       int64  `yaml:"maxPrefixes"`
				} `yaml:"peers"`
			} `yaml:"bgp"`
		}
		if err := yaml.Unmarshal(raw, &c); err != nil {
			return nil, nil, fmt.Errorf("node %s: %s: %w", n.Name, conf, err)
		}
		for _, p := range c.BGP.Peers {
			name := n.Name + "-" + p.Name
			fmt.Fprintf(&b, "---\napiVersion: flatnet.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: %s}\nspec:\n  node: %s\n  address: %q\n  asn: %d\n", name, n.Name, p.Address, p.ASN)
			if p.Password != "" {
				data[name] = p.Password
				fmt.Fprintf(&b, "  password: {secretKey: %s}\n", name)
			}
			if p.HoldTime != "" {
				fmt.Fprintf(&b, "  holdTime: %s\n", p.HoldTime)
			}
			if p.KeepaliveInterval != "" {
				fmt.Fprintf(&b, "  keepaliveInterval: %s\n", p.KeepaliveInterval)
			}
			if p.MaxPrefixes > 0 {
				fmt.Fprintf(&b, "  maxPrefixes: %d\n", p.MaxPrefixes)
			}
		}
	}
	var s strings.Builder
	s.WriteString("apiVersion: v1\nkind: Secret\nmetadata: {name: flatnet-bgp-passwords, namespace: kube-system}\nstringData:\n")
	for _, k := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(&s, "  %s: %q\n", k, data[k])
	}
	return []byte(b.String()), []byte(s.String()), nil
}

// realSocket is where the host reaches a real node's agent socket
// (/run/flatnet/flatnet.sock in the node's mount namespace): through the
// root of the node's first process, which resolves paths in that namespace.
func (l *Lab) realSocket(node string) string {
	kn, err := l.KubeNode(node)
	if err != nil {
		return ""
	}
	return kn.Path("/run/flatnet/flatnet.sock")
}

// HasRealNodes reports whether the topology has real nodes.
func (l *Lab) HasRealNodes() bool { return len(l.realNodes()) > 0 }

// realPods lists the pods running on real nodes (hostNetwork ones left out),
// each with the path of its network namespace from the host.
func (l *Lab) realPods() ([]*Pod, error) {
	if !l.HasRealNodes() || l.kube == nil {
		return nil, nil
	}
	out, err := l.kube.Kubectl("get", "pods", "-A", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
			Spec     struct {
				NodeName    string `json:"nodeName"`
				HostNetwork bool   `json:"hostNetwork"`
			} `json:"spec"`
			Status struct {
				Phase  string `json:"phase"`
				PodIPs []struct {
					IP netip.Addr `json:"ip"`
				} `json:"podIPs"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	netnsOf := map[string]map[netip.Addr]string{}
	var pods []*Pod
	for _, it := range list.Items {
		if it.Spec.HostNetwork || it.Status.Phase != "Running" || len(it.Status.PodIPs) == 0 || !l.Real(it.Spec.NodeName) {
			continue
		}
		node := it.Spec.NodeName
		if netnsOf[node] == nil {
			kn, err := l.KubeNode(node)
			if err != nil {
				return nil, err
			}
			if netnsOf[node], err = kn.PodNetNS(); err != nil {
				return nil, err
			}
		}
		p := &Pod{Node: node, Name: it.Metadata.Namespace + "/" + it.Metadata.Name}
		for _, ip := range it.Status.PodIPs {
			p.Addrs = append(p.Addrs, ip.IP)
			if path, ok := netnsOf[node][ip.IP]; ok {
				p.NS = path
			}
		}
		if p.NS == "" {
			continue // not wired yet, or gone
		}
		pods = append(pods, p)
	}
	slices.SortFunc(pods, func(a, b *Pod) int { return strings.Compare(a.Node+a.Name, b.Node+b.Name) })
	return pods, nil
}

// runEchoPods runs the lab's workload on real nodes: per real node a
// Deployment of n echo pods pinned to it, and waits until they run.
func (l *Lab) runEchoPods(n int) error {
	var b strings.Builder
	for _, node := range l.realNodes() {
		fmt.Fprintf(&b, `---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-%[1]s, namespace: %[2]s}
spec:
  replicas: %[3]d
  selector: {matchLabels: {app: echo, node: %[1]s}}
  template:
    metadata: {labels: {app: echo, node: %[1]s}}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[1]s}
      terminationGracePeriodSeconds: 1
      containers:
        - name: echo
          image: ghcr.io/flatnet-io/flatnet-echo:%[4]s
          imagePullPolicy: Never
          ports: [{containerPort: 8080, name: http}]
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
`, node.Name, PodNamespace, n, EchoTag)
	}
	b.WriteString(l.servicesManifest())
	if err := l.kube.Apply([]byte(b.String())); err != nil {
		return err
	}
	if _, err := l.kube.Kubectl("-n", PodNamespace, "wait", "--for=condition=Ready", "pod/"+soloPod, fmt.Sprintf("--timeout=%s", rolloutTimeout)); err != nil {
		return err
	}
	for _, node := range l.realNodes() {
		if _, err := l.kube.Kubectl("-n", PodNamespace, "rollout", "status", "deployment/echo-"+node.Name, fmt.Sprintf("--timeout=%s", rolloutTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// EchoTag is the tag of the lab's echo image (make image: the
// kustomization's tag).
const EchoTag = "v0.1.0"

// DeployDir is where the lab wrote deploy/ for `kubectl apply -k`.
func (l *Lab) DeployDir() string { return l.state("deploy") }
