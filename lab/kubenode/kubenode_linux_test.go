package kubenode_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab/controlplane"
	"github.com/flatnet-io/flatnet/lab/kubenode"
	"github.com/flatnet-io/flatnet/lab/netns"
	"github.com/flatnet-io/flatnet/test/harness"
)

func TestMain(m *testing.M) {
	kubenode.MaybeInit()
	os.Exit(m.Run())
}

// TestPrivilegedNode brings up a control plane and one real node in network
// namespaces, with Debian's ptp + host-local as the node's network, and runs
// a pod on it: the node registers, turns Ready once a network configuration
// is there, the scheduler binds the pod, containerd runs its sandbox through
// the CNI plugins, the kubelet reports its address. Stopping the node leaves
// no process, cgroup or pod interface behind.
func TestPrivilegedNode(t *testing.T) {
	harness.Require(t, "nsenter", "nft")
	harness.RequireKube(t)
	requireNodeTools(t)
	images := requireImages(t)

	apiNS := harness.NewNetNS(t, "kapi")
	nodeNS := harness.NewNetNS(t, "knode")
	apiAddr, nodeAddr := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	harness.MustRun(t, "ip", "link", "add", "name", "eth0", "netns", apiNS.Name, "type", "veth", "peer", "name", "eth0", "netns", nodeNS.Name)
	apiNS.MustExec(t, "ip", "addr", "add", apiAddr.String()+"/24", "dev", "eth0")
	apiNS.MustExec(t, "ip", "link", "set", "eth0", "up")
	nodeNS.MustExec(t, "ip", "addr", "add", nodeAddr.String()+"/24", "dev", "eth0")
	nodeNS.MustExec(t, "ip", "link", "set", "eth0", "up")
	nodeNS.MustExec(t, "ip", "route", "add", "default", "via", apiAddr.String())

	const nodeName = "knode-1"
	kubeletToken, proxyToken := "kubelet-"+nodeName, "kube-proxy"
	k, err := controlplane.Start(t.TempDir(), controlplane.Options{
		BinDir: harness.KubeBinDir(), NetNS: apiNS.Name, Address: apiAddr, Nodes: true,
		Tokens: []controlplane.Token{
			{Token: kubeletToken, User: "system:node:" + nodeName, Groups: []string{"system:nodes"}},
			{Token: proxyToken, User: "system:kube-proxy"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	cp := &kubenode.ControlPlane{NetNS: apiNS.Name, Dir: t.TempDir(), KubeBin: harness.KubeBinDir(),
		Server: k.URL, CAFile: k.CAFile, Token: controlplane.AdminToken, ServiceAccountKey: k.PKI.ServiceAccountKey}
	if err := kubenode.StartControlPlane(cp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })

	dir, err := os.MkdirTemp("/var/tmp", "kn-")
	if err != nil {
		t.Fatal(err)
	}
	n := &kubenode.Node{
		Name: nodeName, NetNS: "/run/netns/" + nodeNS.Name, Dir: dir,
		CgroupRoot: "/" + filepath.Base(dir), NodeIPs: []netip.Addr{nodeAddr},
		Server: k.URL, CAFile: k.CAFile, KubeletToken: kubeletToken, ProxyToken: proxyToken,
		KubeBin: harness.KubeBinDir(), ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16")},
		ClusterDNS: netip.MustParseAddr("10.96.0.10"), CNIBinSeed: "/usr/lib/cni", Images: images,
	}
	if err := kubenode.Start(n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range []string{"init", "containerd", "kubelet"} {
				b, _ := os.ReadFile(n.Log(l))
				t.Logf("%s.log (tail):\n%s", l, lastLines(string(b), 30))
			}
		}
		if err := n.Remove(); err != nil {
			t.Error(err)
		}
	})

	// The network: Debian's ptp + host-local, the runtime's own plugins.
	conf := `{"cniVersion":"0.4.0","name":"test","plugins":[{"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`
	cmd, err := n.Command("sh", "-c", "cat > /etc/cni/net.d/10-test.conflist")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = strings.NewReader(conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write conflist: %v: %s", err, out)
	}
	// Nothing of the node is on the host: its CNI configuration is its own.
	if _, err := os.Stat("/etc/cni/net.d/10-test.conflist"); err == nil {
		t.Fatal("the node's conflist is on the host")
	}

	waitObject(t, k, "node/"+nodeName)
	mustKubectl(t, k, "wait", "--for=condition=Ready", "--timeout=120s", "node/"+nodeName)
	waitObject(t, k, "serviceaccount/default")
	if err := k.Apply([]byte(`apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec:
  containers: [{name: pause, image: ` + kubenode.SandboxImage + `, imagePullPolicy: Never}]
`)); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, k, "wait", "--for=condition=Ready", "--timeout=120s", "-n", "default", "pod/p")
	ip := strings.TrimSpace(mustKubectl(t, k, "get", "pod", "p", "-n", "default", "-o", "jsonpath={.status.podIP}"))
	if !strings.HasPrefix(ip, "10.88.0.") {
		t.Fatalf("pod IP %q, want one from host-local's 10.88.0.0/24", ip)
	}
	if out, err := nodeNS.Exec("ping", "-c1", "-W2", ip); err != nil {
		t.Fatalf("node → pod %s: %v: %s", ip, err, out)
	}
	pods, err := n.PodNetNS()
	if err != nil {
		t.Fatal(err)
	}
	if path, ok := pods[netip.MustParseAddr(ip)]; !ok {
		t.Errorf("PodNetNS: no namespace with the pod's address %s: %v", ip, pods)
	} else if out, err := netns.Run("nsenter", "--net="+path, "ping", "-c1", "-W2", nodeAddr.String()); err != nil {
		t.Errorf("pod → node from %s: %v: %s", path, err, out)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if n.Running() {
		t.Fatal("node still running after Stop")
	}
	for _, h := range []string{"pids", "memory", "cpu"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, n.CgroupRoot)); err == nil {
			t.Errorf("cgroup %s%s left after Stop", h, n.CgroupRoot)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		links := nodeNS.Links(t)
		if len(links) <= 2 || time.Now().After(deadline) {
			if len(links) > 2 {
				t.Errorf("links left in the node after Stop: %v", links)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitObject waits until the object exists: kubectl wait fails at once on
// one that does not.
func waitObject(t *testing.T, k *controlplane.Server, obj string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := k.Kubectl("get", obj, "-n", "default")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", obj, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustKubectl(t *testing.T, k *controlplane.Server, args ...string) string {
	t.Helper()
	out, err := k.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requireNodeTools stops the test unless the node's programs are there.
func requireNodeTools(t *testing.T) {
	t.Helper()
	harness.RequireTools(t, kubenode.ContainerdPath, kubenode.CtrPath, kubenode.RuncPath, "/usr/bin/nsenter", "/usr/sbin/nft",
		filepath.Join(harness.KubeBinDir(), "kubelet"), filepath.Join(harness.KubeBinDir(), "kube-proxy"))
}

// requireImages returns the pause image archive (make image).
func requireImages(t *testing.T) []string {
	t.Helper()
	p := os.Getenv("FLATNET_PAUSE_IMAGE")
	if p == "" {
		p = filepath.Join(harness.Root(), "bin", "images", "pause.tar")
	}
	harness.RequireFiles(t, "make image", p)
	return []string{p}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
