package install

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/flatnet-io/flatnet/test/harness"
)

// A real runtime notices what install-cni writes: Debian's containerd
// (1.6.20), whose CRI watches its conf dir, turns the node's network ready
// with flatnet's conflist, and follows a changed conflist. containerd's
// watcher ignores create events, so a conflist renamed in from elsewhere
// goes unnoticed (its debug log says "ignore event from cni conf dir:
// CREATE"); install-cni's staging in the conf dir (a rename event) and its
// final append (a write event) are what it acts on.
func TestPrivilegedContainerdNoticesConflist(t *testing.T) {
	n := newNode(t)
	ctd := harness.StartContainerd(t, harness.ContainerdConfig{CRI: true, CNIBinDir: n.opts.BinDir, CNIConf: n.opts.ConfDir})
	conn, err := grpc.NewClient("unix://"+ctd.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cri := runtimeapi.NewRuntimeServiceClient(conn)
	if ready, _ := networkStatus(t, cri); ready {
		t.Fatal("the network is ready before any conflist")
	}

	n.mustInstall(t)
	waitForConflist(t, cri, ctd, "flatnet-bandwidth")

	changed := strings.Replace(flatnetConflist, `{"type": "flatnet"}`, `{"type": "flatnet", "agentSocket": "/run/flatnet/changed.sock"}`, 1)
	write(t, n.opts.Conflist, changed, 0o644)
	if got := n.mustInstall(t); got["etc/cni/net.d/10-flatnet.conflist"] != Replaced {
		t.Fatalf("actions %v", got)
	}
	waitForConflist(t, cri, ctd, "changed.sock")
	for _, l := range strings.Split(ctd.Log(), "\n") {
		if strings.Contains(l, "cni conf dir") {
			t.Log(l)
		}
	}
}

// networkStatus returns the CRI's NetworkReady condition and the CNI
// configuration it has loaded (containerd's verbose status).
func networkStatus(t *testing.T, cri runtimeapi.RuntimeServiceClient) (bool, string) {
	t.Helper()
	resp, err := cri.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.NetworkReady {
			return c.GetStatus(), resp.GetInfo()["cniconfig"]
		}
	}
	t.Fatal("no NetworkReady condition")
	return false, ""
}

// waitForConflist waits until the CRI reports the network ready with a
// configuration containing want. containerd reloads within milliseconds of
// the event; the bound only keeps a runtime that never reloads from hanging
// the test.
func waitForConflist(t *testing.T, cri runtimeapi.RuntimeServiceClient, ctd *harness.Containerd, want string) {
	t.Helper()
	const bound = time.Minute
	for start := time.Now(); time.Since(start) < bound; time.Sleep(20 * time.Millisecond) {
		if ready, conf := networkStatus(t, cri); ready && strings.Contains(conf, want) {
			return
		}
	}
	var log []string
	for _, l := range strings.Split(ctd.Log(), "\n") {
		if strings.Contains(l, "cni") {
			log = append(log, l)
		}
	}
	t.Fatalf("containerd did not load a conflist with %q within %v; its CNI log:\n%s", want, bound, strings.Join(log, "\n"))
}
