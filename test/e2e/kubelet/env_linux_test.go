package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/kubenode"
	"github.com/flatnet-io/flatnet/lab/topology"
	"github.com/flatnet-io/flatnet/test/harness"
)

// runPrefix starts the names of this test process's namespaces (and so of
// its real nodes' directories and cgroups).
var runPrefix = fmt.Sprintf("flabk%d-", os.Getpid())

var deadRun = regexp.MustCompile(`^flabk(\d+)-`)

func TestMain(m *testing.M) {
	kubenode.MaybeInit() // a real node's first process is this binary again
	if os.Geteuid() == 0 {
		if err := lab.SweepDeadRuns(deadRun); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(m.Run())
}

// env is kubelet-tor brought up for one test: real nodes, the DaemonSet.
type env struct {
	*lab.Lab
	report bytes.Buffer // what `up` printed
}

// up brings kubelet-tor up under this run's prefix with pods echo pods on
// every node, Services included, and tears it down when the test ends. It
// fails the test unless every row of the report is yes.
func up(t testing.TB, name string, pods int) *env {
	t.Helper()
	harness.Require(t, "ip", "ping", "nsenter", "nft", "vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd")
	harness.RequireKube(t)
	harness.RequireTools(t, kubenode.ContainerdPath, kubenode.CtrPath, kubenode.RuncPath)
	images := filepath.Join(harness.Root(), "bin", "images")
	var archives []string
	for _, img := range []string{"flatnet.tar", "pause.tar", "echo.tar", "coredns.tar"} {
		archives = append(archives, filepath.Join(images, img))
	}
	harness.RequireFiles(t, "make image", archives...)
	tp, err := topology.Load(filepath.Join(harness.Root(), "test", "topologies", "kubelet-tor", "kubelet-tor.clab.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // FRR runs as frr
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{Lab: &lab.Lab{
		T: tp, Bin: filepath.Dir(harness.Bin("flatnet-agent")), KubeBin: harness.KubeBinDir(), ImageDir: images,
		StateDir: filepath.Join(dir, "state"), Prefix: runPrefix + name + "-", Datastore: lab.DatastoreKubernetes,
	}}
	if _, bench := t.(*testing.B); !bench {
		e.Log = testWriter{t}
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs(t)
		}
		if err := e.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := e.UpWithPods(ctx, pods, &e.report); err != nil {
		t.Fatalf("up: %v\n%s", err, e.report.String())
	}
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dumpLogs shows the tails of the real nodes' logs and the pods' state.
func (e *env) dumpLogs(t testing.TB) {
	t.Logf("report:\n%s", e.report.String())
	if out, err := e.kubectl("get", "nodes,pods", "-A", "-o", "wide"); err == nil {
		t.Logf("kubectl get nodes,pods:\n%s", out)
	}
	for _, n := range []string{"node1", "node2"} {
		kn, err := e.KubeNode(n)
		if err != nil {
			continue
		}
		for _, l := range []string{"init", "kubelet", "containerd"} {
			b, _ := os.ReadFile(kn.Log(l))
			t.Logf("%s %s.log (tail):\n%s", n, l, tail(string(b), 15))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) kubectl(args ...string) (string, error) { return e.Kube().Kubectl(args...) }

func (e *env) mustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := e.kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// podInfo is what the tests read of a Pod object.
type podInfo struct {
	Name, Node string
	IPs        []netip.Addr
	Restarts   int
	Ready      bool
}

// pods lists the pods of a namespace matching a label selector.
func (e *env) pods(t testing.TB, namespace, selector string) []podInfo {
	t.Helper()
	out := e.mustKubectl(t, "get", "pods", "-n", namespace, "-l", selector, "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Spec   struct{ NodeName string } `json:"spec"`
			Status struct {
				PodIPs []struct {
					IP netip.Addr `json:"ip"`
				} `json:"podIPs"`
				Conditions []struct{ Type, Status string } `json:"conditions"`
				Containers []struct {
					RestartCount int `json:"restartCount"`
				} `json:"containerStatuses"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var pods []podInfo
	for _, it := range list.Items {
		if it.Metadata.DeletionTimestamp != nil {
			continue
		}
		p := podInfo{Name: it.Metadata.Name, Node: it.Spec.NodeName}
		for _, ip := range it.Status.PodIPs {
			p.IPs = append(p.IPs, ip.IP)
		}
		for _, c := range it.Status.Containers {
			p.Restarts += c.RestartCount
		}
		for _, c := range it.Status.Conditions {
			p.Ready = p.Ready || c.Type == "Ready" && c.Status == "True"
		}
		pods = append(pods, p)
	}
	return pods
}

// allocations lists, from the IPAMBlock objects, every allocated address
// with the pod it was given to ("namespace/name") and its block's node.
func (e *env) allocations(t testing.TB) map[netip.Addr]string {
	t.Helper()
	out := e.mustKubectl(t, "get", "ipamblocks", "-o", "json")
	var list struct {
		Items []struct {
			Spec json.RawMessage `json:"spec"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]string{}
	for _, it := range list.Items {
		var spec struct {
			Allocations []struct {
				Address    netip.Addr        `json:"address"`
				Attributes map[string]string `json:"attributes"`
				Namespace  string            `json:"namespace"`
				Pod        string            `json:"pod"`
			} `json:"allocations"`
		}
		_ = json.Unmarshal(it.Spec, &spec)
		for _, a := range spec.Allocations {
			ns, pod := a.Namespace, a.Pod
			if ns == "" {
				ns, pod = a.Attributes["namespace"], a.Attributes["pod"]
			}
			got[a.Address] = ns + "/" + pod
		}
	}
	return got
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// podNetNS returns the path of a pod's network namespace on the host.
func (e *env) podNetNS(t testing.TB, node string, ip netip.Addr) string {
	t.Helper()
	kn, err := e.KubeNode(node)
	if err != nil {
		t.Fatal(err)
	}
	var path string
	eventually(t, 30*time.Second, "the namespace of pod "+ip.String(), func() (bool, string) {
		m, err := kn.PodNetNS()
		if err != nil {
			return false, err.Error()
		}
		path = m[ip]
		return path != "", fmt.Sprintf("%d namespaces found", len(m))
	})
	return path
}

// pinger is a ping every 10 ms from a pod's namespace.
type pinger struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startPing(t testing.TB, netnsPath string, dst netip.Addr) *pinger {
	t.Helper()
	p := &pinger{cmd: exec.Command("nsenter", "--net="+netnsPath, "ping", "-i", "0.01", "-W", "1", dst.String())}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	return p
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// stop interrupts the ping and returns the requests sent and replies received.
func (p *pinger) stop(t testing.TB) (sent, received int) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	m := pingSummary.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("no ping summary in: %s", tail(p.out.String(), 5))
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
