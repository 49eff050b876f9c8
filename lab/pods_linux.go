package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/flatnet-io/flatnet/lab/cniruntime"
	"github.com/flatnet-io/flatnet/lab/netns"
	"github.com/flatnet-io/flatnet/lab/topology"
)

// Pod is a pod of the lab: a namespace attached to a flatnet node.
type Pod struct {
	Node  string
	Name  string
	NS    string
	Addrs []netip.Addr
}

// PodNS is the namespace of a pod.
func (l *Lab) PodNS(node, pod string) string { return l.NS(node) + "-" + pod }

// cni is the CNI runtime of a node: the flatnet plugin with the node's agent
// socket, from the lab's binaries, with a cache in the state directory.
func (l *Lab) cni(node string) (*cniruntime.Runtime, error) {
	conflist := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "flatnet", "plugins": [{"type": "flatnet", "agentSocket": %q}]}`, l.Socket(node))
	return cniruntime.New(netns.Path(l.NS(node)), []byte(conflist), []string{l.Bin}, l.state("cni-cache"))
}

func (l *Lab) runtimeConf(node, pod string) *libcni.RuntimeConf {
	sum := sha256.Sum256([]byte(l.T.Name + "/" + node + "/" + pod))
	return &libcni.RuntimeConf{
		ContainerID: hex.EncodeToString(sum[:]),
		NetNS:       netns.Path(l.PodNS(node, pod)),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", PodNamespace}, {"K8S_POD_NAME", KubePodName(node, pod)}},
	}
}

// KubePodName is a lab pod's name as Kubernetes knows it (CNI_ARGS, the Pod
// object): unique in PodNamespace, where pods of every node meet.
func KubePodName(node, pod string) string { return node + "-" + pod }

// AddPod makes a pod namespace (and, with the kubernetes datastore, the Pod
// object) and attaches it to a flatnet node through the CNI plugin. On
// failure the attachment, namespace and object are removed again.
func (l *Lab) AddPod(ctx context.Context, node, pod string) (_ *Pod, err error) {
	if n := l.T.Topology.Nodes[node]; n == nil || n.Role != topology.RoleFlatnet {
		return nil, fmt.Errorf("pod %s: %s is not a flatnet node", pod, node)
	}
	if l.kube != nil {
		if err := l.createPod(node, KubePodName(node, pod)); err != nil {
			return nil, fmt.Errorf("add pod %s on %s: %w", pod, node, err)
		}
		defer func() {
			if err != nil {
				_ = l.deletePod(KubePodName(node, pod))
			}
		}()
	}
	// A bare namespace, as a runtime's sandbox: the plugin brings up what
	// the pod needs, lo included.
	podNS := l.PodNS(node, pod)
	if _, err := netns.Run("ip", "netns", "add", podNS); err != nil {
		return nil, err
	}
	rt, err := l.cni(node)
	if err == nil {
		_, err = rt.Add(ctx, l.runtimeConf(node, pod))
	}
	if err != nil {
		_, _ = netns.Run("ip", "netns", "del", podNS)
		return nil, fmt.Errorf("add pod %s on %s: %w", pod, node, err)
	}
	p, err := l.Pod(node, pod)
	if err == nil && l.kube != nil {
		err = l.podRunning(KubePodName(node, pod), p.Addrs)
	}
	if err != nil {
		_ = l.DelPod(ctx, node, pod) // attached but unusable: detach it again
		return nil, fmt.Errorf("add pod %s on %s: %w", pod, node, err)
	}
	return p, nil
}

// DelPod detaches a pod through the CNI plugin and removes its namespace.
func (l *Lab) DelPod(ctx context.Context, node, pod string) error {
	rt, err := l.cni(node)
	if err == nil {
		err = rt.Del(ctx, l.runtimeConf(node, pod))
	}
	if err != nil {
		return fmt.Errorf("delete pod %s on %s: %w", pod, node, err)
	}
	if _, err = netns.Run("ip", "netns", "del", l.PodNS(node, pod)); err != nil {
		return err
	}
	if l.kube != nil {
		return l.deletePod(KubePodName(node, pod))
	}
	return nil
}

// Pod describes a pod from its namespace: its global addresses on eth0.
func (l *Lab) Pod(node, pod string) (*Pod, error) {
	p := &Pod{Node: node, Name: pod, NS: l.PodNS(node, pod)}
	addrs, err := l.globalAddrs(p.NS, "dev", "eth0")
	if err != nil {
		return nil, err
	}
	p.Addrs = addrs
	return p, nil
}

// Pods lists the lab's pods, found from their namespaces, sorted by node and name.
func (l *Lab) Pods() ([]*Pod, error) {
	var pods []*Pod
	for _, n := range l.T.NodesOf(topology.RoleFlatnet) {
		prefix := l.NS(n.Name) + "-"
		for _, ns := range netns.List(prefix) {
			p, err := l.Pod(n.Name, strings.TrimPrefix(ns, prefix))
			if err != nil {
				return nil, err
			}
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b *Pod) int { return strings.Compare(a.NS, b.NS) })
	real, err := l.realPods()
	if err != nil {
		return nil, err
	}
	return append(pods, real...), nil
}

// PodsFile is where the lab lists its pods for flatnetctl verify.
func (l *Lab) PodsFile() string { return filepath.Join(l.state(), "pods.json") }
