package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/test/harness"
)

// TestPrivilegedBGPPeerObjects runs an agent with BGP on the Kubernetes
// datastore, its kernel routes in a namespace of its own: the BGPPeer
// objects that apply to the node are its peers, beside the config file's and
// the mesh's, and follow the objects and the node's labels live. An object
// that cannot be a peer is left out, and the others still apply.
func TestPrivilegedBGPPeerObjects(t *testing.T) {
	harness.Require(t, "ip")
	netns := harness.NewNetNS(t, "agent")
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	apply(t, k, `apiVersion: v1
kind: Node
metadata:
  name: node1
  annotations: {flatnet.io/ipv4-address: 127.0.0.1}
---
apiVersion: v1
kind: Node
metadata:
  name: node2
  annotations: {flatnet.io/ipv4-address: 127.0.0.2}
`)
	apply(t, k, bgpPeers(
		"all: {address: 127.0.0.11}",
		"rack-b: {address: 127.0.0.12, nodeSelector: {matchLabels: {rack: b}}}",
		"other-node: {address: 127.0.0.13, node: node2}",
		"with-secret: {address: 127.0.0.14, password: {secretKey: tor}}",
		"no-secret: {address: 127.0.0.15, password: {secretKey: absent}}",
		"config-address: {address: 127.0.0.10}",
	))

	cfg := kubeAgentConfig(t, k)
	cfg.Datastore.Kubernetes.BGPPasswordsDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.Datastore.Kubernetes.BGPPasswordsDir, "tor"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.BGP.Enabled = true
	cfg.BGP.NodeIPv4, cfg.BGP.NodeIPv6 = netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("fd00::1")
	cfg.BGP.ListenPort = -1 // dial only: nothing listens, sessions stay down
	cfg.BGP.Peers = []config.Peer{{Name: "tor-conf", Address: netip.MustParseAddr("127.0.0.10"), ASN: 65000, Passive: true}}
	log, logs := logTo(t)
	status := agentpb.NewAgentClient(startAgent(t, cfg, env{netns: netns.NetNS}, log))

	// Polled: the agent follows the API server's events, in its own time.
	wantPeers := func(what string, want ...string) {
		t.Helper()
		var got []string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			resp, err := status.Status(t.Context(), &agentpb.StatusRequest{})
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			got = got[:0]
			for _, p := range resp.GetPeers() {
				got = append(got, p.GetName())
			}
			if slices.Equal(got, want) {
				return
			}
		}
		t.Fatalf("%s: peers (-want +got):\n%s", what, cmp.Diff(want, got))
	}
	wantPeers("the config's, the mesh's and the objects' for node1",
		"mesh-node2", "peer-all", "peer-with-secret", "tor-conf")
	for _, want := range []string{
		`bgppeer=no-secret err="bgppeer no-secret: password: secret key absent: no file`,
		`bgppeer=config-address err="bgppeer config-address: address 127.0.0.10 is already peer tor-conf's"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say why an object is left out: want %q", want)
		}
	}

	k.MustKubectl(t, "label", "node", "node1", "rack=b")
	wantPeers("node1 labelled into rack b", "mesh-node2", "peer-all", "peer-rack-b", "peer-with-secret", "tor-conf")
	k.MustKubectl(t, "delete", "bgppeer", "all")
	wantPeers("object deleted", "mesh-node2", "peer-rack-b", "peer-with-secret", "tor-conf")
	apply(t, k, bgpPeers("late: {address: 127.0.0.16}"))
	wantPeers("object added", "mesh-node2", "peer-late", "peer-rack-b", "peer-with-secret", "tor-conf")
	k.MustKubectl(t, "label", "node", "node1", "rack-")
	wantPeers("node1 out of rack b", "mesh-node2", "peer-late", "peer-with-secret", "tor-conf")
	k.MustKubectl(t, "delete", "node", "node2")
	wantPeers("mesh node gone", "peer-late", "peer-with-secret", "tor-conf")
}

// bgpPeers returns a manifest of passive BGPPeers in AS 65000, each given
// as "name: {spec fields}".
func bgpPeers(peers ...string) string {
	var b strings.Builder
	for _, p := range peers {
		name, spec, _ := strings.Cut(p, ": {")
		b.WriteString("---\napiVersion: flatnet.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: " + name + "}\n")
		b.WriteString("spec: {asn: 65000, passive: true, " + spec + "\n")
	}
	return b.String()
}
