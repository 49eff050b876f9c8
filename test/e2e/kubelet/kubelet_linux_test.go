// Package kubelet tests flatnet the way it is deployed: on real nodes
// (containerd, kubelet, kube-proxy: lab/kubenode), from its image, installed
// by its DaemonSet, with Services through kube-proxy.
package kubelet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab"
)

// TestPrivilegedRealNodes brings up kubelet-tor — control plane, two real
// nodes behind an FRR ToR, deploy/ applied unchanged — and checks, in order,
// what a cluster operator relies on.
func TestPrivilegedRealNodes(t *testing.T) {
	e := up(t, "rn", 2)
	t.Logf("report:\n%s", e.report.String())
	// up failed the test unless every row was yes: pods across nodes, the
	// Services through kube-proxy. Say what was measured.
	for _, rule := range append([]string{"pod→pod across nodes"}, lab.ServiceRules...) {
		if !strings.Contains(e.report.String(), rule) {
			t.Errorf("the report has no row %q", rule)
		}
	}
	t.Run("install-cni", func(t *testing.T) { testInstallCNI(t, e) })
	t.Run("pod deleted", func(t *testing.T) { testDeletePod(t, e) })
	t.Run("container restart keeps the address", func(t *testing.T) { testContainerRestart(t, e) })
	t.Run("rolling update keeps pod traffic", func(t *testing.T) { testRollingUpdate(t, e) })
	t.Run("agent pod deleted keeps pod traffic", func(t *testing.T) { testDeleteAgentPod(t, e) })
	t.Run("drained node holds no allocation", func(t *testing.T) { testDrain(t, e) })
}

// testInstallCNI: the init container installed flatnet's plugins beside the
// node's own (Debian's reference plugins 1.1.1, seeded before the node
// started), replaced none of them, and wrote a conflist at 1.0.0 — the
// version containerd 1.6 parses results of (with 1.1.0 it refused every
// pod: "unsupported CNI result version").
func testInstallCNI(t *testing.T, e *env) {
	kn, err := e.KubeNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"flatnet", "flatnet-portmap", "flatnet-bandwidth"} {
		if _, err := os.Stat(kn.Path("/opt/cni/bin/" + p)); err != nil {
			t.Errorf("plugin %s not installed: %v", p, err)
		}
	}
	for _, p := range []string{"portmap", "bandwidth", "loopback"} {
		got, err1 := os.ReadFile(kn.Path("/opt/cni/bin/" + p))
		want, err2 := os.ReadFile(filepath.Join("/usr/lib/cni", p))
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("the node's own %s was replaced or lost (%v, %v)", p, err1, err2)
		}
	}
	b, err := os.ReadFile(kn.Path("/etc/cni/net.d/10-flatnet.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.CNIVersion != "1.0.0" {
		t.Errorf("installed conflist is at %s, want 1.0.0 (containerd 1.6 refuses 1.1.0 results)", conf.CNIVersion)
	}
	for _, p := range conf.Plugins {
		if p.Type == "portmap" || p.Type == "bandwidth" {
			t.Errorf("the conflist chains the node's own %s", p.Type)
		}
	}
}

// testDeletePod: deleting a pod runs DEL through the kubelet and containerd:
// its route leaves the node and its address the IPAM.
func testDeletePod(t *testing.T, e *env) {
	pods := e.pods(t, lab.PodNamespace, "node=node1")
	if len(pods) == 0 {
		t.Fatal("no echo pod on node1")
	}
	victim := pods[0]
	ip := victim.IPs[0]
	routes := func() string {
		out, _ := e.Exec(e.NS("node1"), "ip", "route", "show", "proto", "75")
		return out
	}
	if !strings.Contains(routes(), ip.String()+" dev ") {
		t.Fatalf("no pod route to %s on node1:\n%s", ip, routes())
	}
	e.mustKubectl(t, "delete", "pod", "-n", lab.PodNamespace, victim.Name, "--wait=true", "--timeout=60s")
	eventually(t, 60*time.Second, "pod "+victim.Name+" unwired", func() (bool, string) {
		if strings.Contains(routes(), ip.String()+" dev ") {
			// The replacement may have the same address: it is then another handle.
			if e.allocations(t)[ip] == lab.PodNamespace+"/"+victim.Name {
				return false, "route and allocation still there"
			}
		}
		for a, owner := range e.allocations(t) {
			if owner == lab.PodNamespace+"/"+victim.Name {
				return false, fmt.Sprintf("%s still allocated to it", a)
			}
		}
		return true, ""
	})
	e.mustKubectl(t, "-n", lab.PodNamespace, "rollout", "status", "deployment/echo-node1", "--timeout=120s")
}

// testContainerRestart: a container that dies is restarted in the same pod
// sandbox, and the pod keeps its address.
func testContainerRestart(t *testing.T, e *env) {
	pod := e.pods(t, lab.PodNamespace, "node=node2")[0]
	netnsPath := e.podNetNS(t, "node2", pod.IPs[0])
	pid := processIn(t, netnsPath, "echo")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "container restarted", func() (bool, string) {
		for _, p := range e.pods(t, lab.PodNamespace, "node=node2") {
			if p.Name == pod.Name {
				return p.Restarts > pod.Restarts && p.Ready, fmt.Sprintf("restarts %d, ready %v", p.Restarts, p.Ready)
			}
		}
		return false, "pod gone"
	})
	for _, p := range e.pods(t, lab.PodNamespace, "node=node2") {
		if p.Name == pod.Name && !slices.Equal(p.IPs, pod.IPs) {
			t.Errorf("pod %s: addresses %v after its container restarted, were %v", p.Name, p.IPs, pod.IPs)
		}
	}
}

// processIn finds the host pid of a process named name in a network
// namespace (a path under /proc).
func processIn(t *testing.T, netnsPath, name string) int {
	t.Helper()
	want, err := os.Readlink(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		var pid int
		if _, err := fmt.Sscan(d.Name(), &pid); err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != name {
			continue
		}
		if id, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); id == want {
			return pid
		}
	}
	t.Fatalf("no process %s in %s", name, netnsPath)
	return 0
}

// crossPing starts 10 ms pings from a pod on node1 to a pod on node2.
func crossPing(t *testing.T, e *env) *pinger {
	t.Helper()
	from := e.pods(t, lab.PodNamespace, "node=node1")[0]
	to := e.pods(t, lab.PodNamespace, "node=node2")[0]
	return startPing(t, e.podNetNS(t, "node1", from.IPs[0]), to.IPs[0])
}

func wantNoLoss(t *testing.T, p *pinger) {
	t.Helper()
	sent, received := p.stop(t)
	t.Logf("pings: %d sent, %d received", sent, received)
	if sent < 100 || received != sent {
		t.Errorf("pod traffic lost: %d of %d pings answered", received, sent)
	}
}

// testRollingUpdate: a changed ConfigMap rolls the DaemonSet (kustomize names
// the ConfigMap by a hash of its content) node by node; every agent restarts,
// and pods on two nodes keep talking without losing a packet.
func testRollingUpdate(t *testing.T, e *env) {
	dir := t.TempDir()
	if out, err := runCmd("cp", "-r", e.DeployDir()+"/.", dir); err != nil {
		t.Fatalf("copy deploy: %v: %s", err, out)
	}
	conf := filepath.Join(dir, "agent", "flatnet.yaml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(b), "level: info", "level: debug", 1)
	if changed == string(b) {
		t.Fatal("deploy/agent/flatnet.yaml has no `level: info` to change")
	}
	if err := os.WriteFile(conf, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	before := e.agentPods(t)
	p := crossPing(t, e)
	time.Sleep(time.Second)
	e.mustKubectl(t, "apply", "--server-side", "-k", dir)
	e.mustKubectl(t, "-n", "kube-system", "rollout", "status", "daemonset/flatnet", "--timeout=240s")
	time.Sleep(2 * time.Second) // traffic after the last agent is back
	wantNoLoss(t, p)
	after := e.agentPods(t)
	for _, old := range before {
		if slices.Contains(after, old) {
			t.Errorf("agent pod %s survived the rolling update", old)
		}
	}
}

// testDeleteAgentPod: deleting an agent's pod (SIGTERM: a planned restart)
// loses no pod traffic while the DaemonSet makes a new one.
func testDeleteAgentPod(t *testing.T, e *env) {
	var agent string
	out := e.mustKubectl(t, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=flatnet", "--field-selector", "spec.nodeName=node1", "-o", "name")
	agent = strings.TrimSpace(out)
	if agent == "" {
		t.Fatal("no agent pod on node1")
	}
	p := crossPing(t, e)
	time.Sleep(time.Second)
	e.mustKubectl(t, "-n", "kube-system", "delete", agent, "--wait=true", "--timeout=60s")
	e.mustKubectl(t, "-n", "kube-system", "rollout", "status", "daemonset/flatnet", "--timeout=240s")
	time.Sleep(2 * time.Second)
	wantNoLoss(t, p)
}

// testDrain: a node drained of its pods holds no address in IPAM.
func testDrain(t *testing.T, e *env) {
	e.mustKubectl(t, "drain", "node2", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--grace-period=1", "--timeout=120s")
	t.Cleanup(func() { _, _ = e.kubectl("uncordon", "node2") })
	eventually(t, 60*time.Second, "node2's allocations released", func() (bool, string) {
		var left []string
		onNode2 := map[string]bool{}
		for _, p := range e.pods(t, lab.PodNamespace, "app") {
			onNode2[lab.PodNamespace+"/"+p.Name] = p.Node == "node2"
		}
		for a, owner := range e.allocations(t) {
			if strings.HasPrefix(owner, lab.PodNamespace+"/echo-node2") || onNode2[owner] {
				left = append(left, a.String()+" "+owner)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}

// agentPods names the DaemonSet's pods.
func (e *env) agentPods(t *testing.T) []string {
	out := e.mustKubectl(t, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=flatnet", "-o", "name")
	return strings.Fields(out)
}
