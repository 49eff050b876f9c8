package lab

import (
	"cmp"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flatnet-io/flatnet/deploy"
	"github.com/flatnet-io/flatnet/lab/controlplane"
	"github.com/flatnet-io/flatnet/lab/netns"
	"github.com/flatnet-io/flatnet/lab/topology"
)

// The lab with the kubernetes datastore (Lab.Datastore): etcd and a
// kube-apiserver (lab/controlplane) run in a namespace of their own,
// NS(KubeNode), which every flatnet node reaches over a management link of
// its own, a veth pair: 192.0.2.240 is the API server's address (on the
// namespace's loopback), 169.254.240.<10+i> the node's end. The addresses
// are link-local, in scope too, so neither the agents nor the report take
// them for the node's own. The lab installs the CRDs and RBAC from deploy/,
// creates a Node object per flatnet node (its BGP addresses as InternalIP)
// and a Pod object per pod, as the kubelet would, and runs the agents under
// the flatnet ServiceAccount's token. Down removes it all with the
// namespace.

// Datastores a lab runs with.
const (
	DatastoreFile       = "file"
	DatastoreKubernetes = "kubernetes"
)

const (
	// KubeNode names the control plane's namespace within the lab's.
	KubeNode = "k8s"
	// PodNamespace is the Kubernetes namespace of the lab's Pod objects.
	PodNamespace = "lab"
	// mgmtIf is the management link's end in a node.
	mgmtIf = "flmgmt"
	// tokenLifetime is how long the agents' ServiceAccount token is good
	// for: longer than a lab lives.
	tokenLifetime = 365 * 24 * time.Hour
)

// kubeAddr is not link-local: it is the kubernetes Service's endpoint, and
// an EndpointSlice refuses link-local addresses. A documentation address,
// used only inside the lab's namespaces.
var kubeAddr = netip.MustParseAddr("192.0.2.240")

// mgmtAddr is the address of the i-th node's end of its management link.
func mgmtAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{169, 254, 240, byte(10 + i)}) }

func (l *Lab) kubernetes() bool { return l.Datastore == DatastoreKubernetes }

// Kube is the lab's API server, once Up has started it; nil with the file
// datastore.
func (l *Lab) Kube() *controlplane.Server { return l.kube }

// agentKubeconfig is the kubeconfig the agents use: the ServiceAccount's.
func (l *Lab) agentKubeconfig() string { return l.state(KubeNode, "agent.kubeconfig") }

// checkKube refuses, before anything is changed, a lab the control plane
// cannot run: tools missing, a node named like its namespace, a flatnet
// node whose Node object would have no address.
func (l *Lab) checkKube() error {
	if _, clash := l.T.Topology.Nodes[KubeNode]; clash {
		return fmt.Errorf("datastore kubernetes: the topology has a node named %s, the name of the API server's namespace", KubeNode)
	}
	if l.KubeBin == "" {
		return fmt.Errorf("datastore kubernetes: no directory of kube-apiserver given (flatnet-lab --kube-bin, or $FLATNET_KUBE_BIN; make kube-bins builds it)")
	}
	if err := controlplane.CheckTools(l.KubeBin); err != nil {
		return fmt.Errorf("datastore kubernetes: %w", err)
	}
	for _, n := range l.T.NodesOf(topology.RoleFlatnet) {
		if _, err := l.bgpAddrs(n); err != nil {
			return err
		}
	}
	return nil
}

// startKube brings up the control plane, links every flatnet node to it, and
// makes the objects the agents need before they start.
func (l *Lab) startKube() error {
	if err := l.startControlPlane(); err != nil {
		return err
	}
	for _, n := range l.T.NodesOf(topology.RoleFlatnet) {
		i := l.mgmtLinks // the link's number, for a real node's routes
		if _, err := l.linkToControlPlane(n.Name); err != nil {
			return err
		}
		if isReal(n) { // its kubelet registers it
			if err := l.prepareRealNode(n, i); err != nil {
				return err
			}
			continue
		}
		if err := l.createNode(n); err != nil {
			return err
		}
	}
	return nil
}

// startControlPlane starts etcd and kube-apiserver in their namespace,
// installs flatnet's CRDs and RBAC and the pods' namespace, and writes the
// agents' kubeconfig with the flatnet ServiceAccount's token.
func (l *Lab) startControlPlane() error {
	kns := l.NS(KubeNode)
	if err := netns.Add(kns); err != nil {
		return err
	}
	if _, err := l.Exec(kns, "ip", "addr", "add", kubeAddr.String()+"/32", "dev", "lo", "scope", "link"); err != nil {
		return err
	}
	k, err := controlplane.Start(l.state(KubeNode), l.controlPlaneOptions(controlplane.Options{BinDir: l.KubeBin, NetNS: kns, Address: kubeAddr, Detach: true}))
	if err != nil {
		return err
	}
	l.kube = k
	l.logf("kube-apiserver up at %s in namespace %s (kubectl: ip netns exec %s kubectl --kubeconfig %s)", k.URL, kns, kns, k.Kubeconfig)

	manifests, err := fs.ReadDir(deploy.Cluster, "crds")
	if err != nil {
		return err
	}
	var crds []byte
	for _, m := range manifests {
		b, err := deploy.Cluster.ReadFile("crds/" + m.Name())
		if err != nil {
			return err
		}
		crds = append(append(crds, "\n---\n"...), b...)
	}
	if err := k.ApplyCRDs(crds); err != nil {
		return err
	}
	rbac, err := deploy.Cluster.ReadFile("rbac.yaml")
	if err != nil {
		return err
	}
	if err := k.Apply(fmt.Appendf(rbac, "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", PodNamespace)); err != nil {
		return err
	}
	token, err := k.ServiceAccountToken("kube-system", "flatnet", tokenLifetime)
	if err != nil {
		return err
	}
	return k.WriteKubeconfig(l.agentKubeconfig(), token)
}

// linkToControlPlane gives a node its management link to the control
// plane's namespace and returns the node's address on it: any node that
// talks to the API server (a flatnet node's agent, a kubelet) gets one.
func (l *Lab) linkToControlPlane(node string) (netip.Addr, error) {
	kns := l.NS(KubeNode)
	i := l.mgmtLinks
	if i >= 240 {
		return netip.Addr{}, fmt.Errorf("node %s: management link: the lab links at most 240 nodes to the control plane", node)
	}
	l.mgmtLinks++
	kIf, addr := fmt.Sprintf("k8s%d", i), mgmtAddr(i).String()
	if _, err := netns.Run("ip", "link", "add", "name", kIf, "netns", kns, "type", "veth", "peer", "name", mgmtIf, "netns", l.NS(node)); err != nil {
		return netip.Addr{}, err
	}
	for _, c := range [][]string{
		{kns, "ip", "link", "set", kIf, "up"},
		{kns, "ip", "route", "add", addr + "/32", "dev", kIf, "src", kubeAddr.String()},
		{l.NS(node), "ip", "link", "set", mgmtIf, "up"},
		{l.NS(node), "ip", "addr", "add", addr + "/32", "dev", mgmtIf, "scope", "link"},
		{l.NS(node), "ip", "route", "add", kubeAddr.String() + "/32", "dev", mgmtIf, "src", addr},
	} {
		if _, err := l.Exec(c[0], c[1:]...); err != nil {
			return netip.Addr{}, fmt.Errorf("node %s: management link: %w", node, err)
		}
	}
	return mgmtAddr(i), nil
}

// createNode makes the Node object of a flatnet node, with the addresses its
// config gives BGP as InternalIP: the mesh finds its peers there.
func (l *Lab) createNode(n *topology.Node) error {
	addrs, err := l.bgpAddrs(n)
	if err != nil {
		return err
	}
	if err := l.kube.Apply(fmt.Appendf(nil, "apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels: {kubernetes.io/hostname: %s}\n", n.Name, n.Name)); err != nil {
		return err
	}
	var status []string
	for _, a := range addrs {
		status = append(status, fmt.Sprintf(`{"type":"InternalIP","address":%q}`, a))
	}
	status = append(status, fmt.Sprintf(`{"type":"Hostname","address":%q}`, n.Name))
	_, err = l.kube.Kubectl("patch", "node", n.Name, "--subresource=status", "--type=merge",
		"-p", `{"status":{"addresses":[`+strings.Join(status, ",")+`]}}`)
	return err
}

// bgpAddrs reads bgp.nodeIPv4 and bgp.nodeIPv6 from a flatnet node's config
// (the FLATNET_BGP_* variables of the node, when set, win, as in the agent).
func (l *Lab) bgpAddrs(n *topology.Node) ([]netip.Addr, error) {
	conf, _ := l.T.Bind(n, topology.FlatnetConfigPath)
	b, err := os.ReadFile(conf)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	var c struct {
		BGP struct {
			NodeIPv4 string `yaml:"nodeIPv4"`
			NodeIPv6 string `yaml:"nodeIPv6"`
		} `yaml:"bgp"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("node %s: %s: %w", n.Name, filepath.Base(conf), err)
	}
	var out []netip.Addr
	for _, v := range []string{cmp.Or(n.Env["FLATNET_BGP_NODEIPV4"], c.BGP.NodeIPv4), cmp.Or(n.Env["FLATNET_BGP_NODEIPV6"], c.BGP.NodeIPv6)} {
		if v == "" {
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("node %s: bgp address %q: %w", n.Name, v, err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("node %s: datastore kubernetes needs bgp.nodeIPv4 or bgp.nodeIPv6 in %s: the Node object's InternalIP", n.Name, conf)
	}
	return out, nil
}

// createPod makes the Pod object of a lab pod, bound to its node, as the
// scheduler and kubelet would before the runtime calls the plugin: the
// agents' garbage collector keeps the addresses of pods that exist.
func (l *Lab) createPod(node, pod string) error {
	return l.kube.Apply(fmt.Appendf(nil, `apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeName: %s
  containers: [{name: pause, image: registry.k8s.io/pause:3.10}]
`, pod, PodNamespace, node))
}

// podRunning records in a pod's status that it runs with addrs, as the
// kubelet does once the plugin has answered.
func (l *Lab) podRunning(name string, addrs []netip.Addr) error {
	var ips []string
	for _, a := range addrs {
		ips = append(ips, fmt.Sprintf(`{"ip":%q}`, a))
	}
	status := `{"status":{"phase":"Running","podIPs":[` + strings.Join(ips, ",") + `]`
	if len(addrs) > 0 {
		status += fmt.Sprintf(`,"podIP":%q`, addrs[0])
	}
	_, err := l.kube.Kubectl("patch", "pod", name, "-n", PodNamespace, "--subresource=status", "--type=merge", "-p", status+"}}")
	return err
}

// deletePod removes a pod's object at once: no kubelet is there to confirm
// a graceful deletion.
func (l *Lab) deletePod(pod string) error {
	_, err := l.kube.Kubectl("delete", "pod", pod, "-n", PodNamespace, "--grace-period=0", "--force", "--ignore-not-found")
	return err
}

// AttachKube finds the control plane an earlier `up` of this lab started
// (for status and the tests that drive a lab brought up elsewhere); with
// the file datastore and no real nodes there is none, and that is no error.
func (l *Lab) AttachKube() error {
	if l.kube != nil || (!l.kubernetes() && !l.HasRealNodes()) {
		return nil
	}
	k, err := controlplane.Attach(l.state(KubeNode), controlplane.Options{BinDir: l.KubeBin, NetNS: l.NS(KubeNode), Address: kubeAddr})
	if err != nil {
		return err
	}
	l.kube = k
	return nil
}
