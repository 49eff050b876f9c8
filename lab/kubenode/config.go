package kubenode

import (
	"fmt"
	"os"
	"strings"
)

// The node's configuration files. Each setting that is not upstream's default
// says why it is there.

// containerdConfig is containerd 1.6's (config version 2).
func (n *Node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
# root and state on a real directory: the overlayfs snapshotter cannot sit on
# an overlay's upper layer.
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # cgroup v1 without a hugetlb controller.
  tolerate_missing_hugetlb_controller = true
  # Pod network namespaces under the state directory, not the host's /run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = %[5]q
        # No systemd: cgroupfs, as the kubelet.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`, n.path("containerd"), n.path("containerd-state"), n.Socket(), SandboxImage, RuncPath)
}

// kubeconfig authenticates with a bearer token.
func (n *Node) kubeconfig(user, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %s
  user: {token: %q}
contexts:
- name: lab
  context: {cluster: lab, user: %s}
current-context: lab
`, n.Server, n.CAFile, user, token, user)
}

// kubeletConfig is the KubeletConfiguration.
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
containerRuntimeEndpoint: unix://%[1]s
# No systemd; cgroup v1. A root of its own: two kubelets on one machine would
# both use /kubepods.
cgroupDriver: cgroupfs
cgroupRoot: %[2]s
failSwapOn: false
# The kubelet would set vm.overcommit_memory, kernel.panic and
# kernel.panic_on_oops on the shared host; it checks them instead, and the
# node's mount namespace shows it the values it wants.
protectKernelDefaults: true
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[3]q}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [%[4]s]
# Pods with dnsPolicy Default get no host resolvers: there is no upstream DNS.
resolvConf: ""
# Not the host's /usr/libexec/kubernetes.
volumePluginDir: %[5]q
# The machine is shared: never evict the lab's pods for the host's disk or memory.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
localStorageCapacityIsolation: false
shutdownGracePeriod: 0s
`, n.Socket(), n.CgroupRoot, n.CAFile, n.ClusterDNS, n.path("volume-plugins"))
}

// kubeProxyConfig is the KubeProxyConfiguration: nftables mode.
func (n *Node) kubeProxyConfig() string {
	cidrs := make([]string, len(n.ClusterCIDRs))
	for i, p := range n.ClusterCIDRs {
		cidrs[i] = p.String()
	}
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
hostnameOverride: %s
mode: nftables
clusterCIDR: %q
# The conntrack table is the host's: kube-proxy may not resize it
# ("open /proc/sys/net/netfilter/nf_conntrack_max: permission denied").
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
# Lowering its OOM score needs CAP_SYS_RESOURCE.
oomScoreAdj: 0
metricsBindAddress: 127.0.0.1:10249
`, n.path("kube-proxy.kubeconfig"), n.Name, strings.Join(cidrs, ","))
}

// kernelDefaults are the sysctls the kubelet checks with
// protectKernelDefaults, and the values it wants: the node's mount namespace
// shows it these over /proc/sys, the host keeps its own.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// writeFiles writes the node's configuration into its directory.
func (n *Node) writeFiles() error {
	for _, d := range []string{"log", "containerd", "containerd-state", "volume-plugins", "kubelet-pki", "sysctl"} {
		if err := os.MkdirAll(n.path(d), 0o700); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd.toml":       n.containerdConfig(),
		"kubelet.yaml":          n.kubeletConfig(),
		"kubelet.kubeconfig":    n.kubeconfig("system:node:"+n.Name, n.KubeletToken),
		"kube-proxy.yaml":       n.kubeProxyConfig(),
		"kube-proxy.kubeconfig": n.kubeconfig("system:kube-proxy", n.ProxyToken),
	}
	for name, v := range kernelDefaults {
		files["sysctl/"+strings.ReplaceAll(name, "/", ".")] = v + "\n"
	}
	for name, content := range files {
		if err := os.WriteFile(n.path(name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	return n.writeJSON()
}
