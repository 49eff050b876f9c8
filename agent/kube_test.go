package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/config"
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

// kubeAgentConfig returns a config on the Kubernetes datastore k, as the
// agent's ServiceAccount under deploy/rbac.yaml, on node1.
func kubeAgentConfig(t *testing.T, k *harness.Kube) config.Config {
	t.Helper()
	k.MustKubectl(t, "apply", "-f", harness.Root()+"/deploy/rbac.yaml")
	token := k.ServiceAccountToken(t, "kube-system", "flatnet")
	cfg := testConfig(t)
	cfg.Datastore.Type = "kubernetes"
	cfg.Datastore.Kubernetes.Kubeconfig = k.KubeconfigForToken(t, token)
	return cfg
}

// apply applies the YAML manifest doc as the admin.
func apply(t *testing.T, k *harness.Kube, doc string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	k.MustKubectl(t, "apply", "-f", path)
}

// IPPool objects are pools beside the config file's: a pool defined in both
// differently stops the agent before it writes anything; otherwise the
// agent allocates from the objects' pools, and warns of later changes.
func TestKubernetesIPPools(t *testing.T) {
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	k.MustKubectl(t, "apply", "-f", writeNode(t, "node1"))
	apply(t, k, `apiVersion: flatnet.io/v1alpha1
kind: IPPool
metadata: {name: objects-v4}
spec: {cidr: 10.20.0.0/30, blockSize: 31}
`)

	cfg := kubeAgentConfig(t, k)
	cfg.IPAM.Pools = []config.Pool{{Name: "objects-v4", CIDR: netip.MustParsePrefix("10.30.0.0/30"), BlockSize: 31}}
	err := Run(t.Context(), cfg, slog.New(slog.DiscardHandler))
	want := "pool objects-v4 is defined twice, differently: ipam.pools[0] is 10.30.0.0/30 in /31 blocks, IPPool objects-v4 is 10.20.0.0/30 in /31 blocks"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run with a pool defined differently in the file and as an object = %v, want %q", err, want)
	}
	if out := k.MustKubectl(t, "get", "ipamblocks", "-o", "name"); out != "" {
		t.Errorf("an agent that failed to start wrote blocks: %q", out)
	}
	if _, err := os.Stat(cfg.API.Socket); err == nil {
		t.Error("an agent that failed to start left its socket")
	}

	cfg = kubeAgentConfig(t, k)
	cfg.IPAM.Pools = nil // the objects' only
	log, logs := logTo(t)
	client := ipampb.NewIPAMClient(startAgent(t, cfg, env{}, log))
	resp, err := client.Allocate(t.Context(), &ipampb.AllocateRequest{Handle: "c1/eth0", Attrs: &ipampb.Attributes{Namespace: "default", Pod: "p1"}})
	if err != nil {
		t.Fatalf("Allocate from an IPPool object: %v", err)
	}
	if got := resp.GetAddresses(); len(got) != 1 || got[0].GetAddress() != "10.20.0.0/32" || got[0].GetPool() != "objects-v4" {
		t.Errorf("Allocate = %v, want 10.20.0.0/32 from pool objects-v4 only", got)
	}

	// A pool added while the agent runs is not used: the agent says to restart.
	apply(t, k, `apiVersion: flatnet.io/v1alpha1
kind: IPPool
metadata: {name: later-v6}
spec: {cidr: "fd00:20::/120"}
`)
	eventually(t, "a warning that the new pool needs a restart", func() bool {
		return strings.Contains(logs.String(), `msg="ippool added: restart the agent to apply (a planned restart keeps pod traffic)" node=node1 ippool=later-v6`)
	})
	usage, err := client.Usage(t.Context(), &ipampb.UsageRequest{})
	if err != nil || len(usage.GetPools()) != 1 {
		t.Errorf("Usage after an IPPool was added = %v, %v; want the one pool the agent started with", usage.GetPools(), err)
	}
	if strings.Contains(logs.String(), "ippool=objects-v4") {
		t.Errorf("the pool the agent started with was reported as a change:\n%s", logs)
	}
}
