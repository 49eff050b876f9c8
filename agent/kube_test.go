package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/test/harness"
)

// TestKubernetesDatastore runs the agent on a real kube-apiserver: it
// allocates into IPAMBlock objects, under the agent's own ServiceAccount
// and RBAC from deploy/.
func TestKubernetesDatastore(t *testing.T) {
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	k.MustKubectl(t, "apply", "-f", harness.Root()+"/deploy/rbac.yaml")
	token := k.ServiceAccountToken(t, "kube-system", "flatnet")
	k.MustKubectl(t, "apply", "-f", writeNode(t, "node1"))

	cfg := testConfig(t)
	cfg.Datastore.Type = "kubernetes"
	cfg.Datastore.Kubernetes.Kubeconfig = k.KubeconfigForToken(t, token)
	client := start(t, cfg)

	ctx := context.Background()
	resp, err := client.Allocate(ctx, &ipampb.AllocateRequest{Handle: "c1/eth0", Attrs: &ipampb.Attributes{Namespace: "default", Pod: "p1"}})
	if err != nil {
		t.Fatalf("Allocate on the Kubernetes datastore: %v", err)
	}
	got := resp.GetAddresses()[0].GetAddress()
	if !netip.MustParsePrefix("10.10.0.0/30").Contains(netip.MustParsePrefix(got).Addr()) {
		t.Errorf("allocated %s, outside the pool", got)
	}
	out := k.MustKubectl(t, "get", "ipamblocks", "-o", "name")
	if !strings.Contains(out, "ipamblock") {
		t.Errorf("no IPAMBlock object after an allocation: %q", out)
	}
}

func writeNode(t *testing.T, name string) string {
	t.Helper()
	path := t.TempDir() + "/node.yaml"
	if err := os.WriteFile(path, []byte(fmt.Sprintf("apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n", name)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
