package kubemesh_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/bgp/mesh/kubemesh"
	"github.com/flatnet-io/flatnet/kube"
	"github.com/flatnet-io/flatnet/test/harness"
)

var equateAddrs = cmpopts.EquateComparable(netip.Addr{})

func node(name string, annotations map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
}

func internal(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

func TestNodeFromObject(t *testing.T) {
	hostname := corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"}
	external := corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.9"}
	a4, a6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	for _, tc := range []struct {
		name    string
		node    *corev1.Node
		want    mesh.Node
		wantErr string
	}{
		{"v4", node("n1", nil, hostname, external, internal("10.0.0.1"), internal("10.0.0.2")),
			mesh.Node{Name: "n1", IPv4: a4, ASN: 64512}, ""},
		{"dual stack", node("n1", nil, internal("fd00::1"), internal("10.0.0.1")),
			mesh.Node{Name: "n1", IPv4: a4, IPv6: a6, ASN: 64512}, ""},
		{"v6 only", node("n1", nil, internal("fd00::1")),
			mesh.Node{Name: "n1", IPv6: a6, ASN: 64512}, ""},
		{"annotations override", node("n1", map[string]string{
			kubemesh.AnnotationIPv4: "192.0.2.7", kubemesh.AnnotationIPv6: "2001:db8::7", kubemesh.AnnotationASN: "4200000001",
		}, internal("10.0.0.1")),
			mesh.Node{Name: "n1", IPv4: netip.MustParseAddr("192.0.2.7"), IPv6: netip.MustParseAddr("2001:db8::7"), ASN: 4200000001}, ""},
		{"address from annotation only", node("n1", map[string]string{kubemesh.AnnotationIPv4: "192.0.2.7"}),
			mesh.Node{Name: "n1", IPv4: netip.MustParseAddr("192.0.2.7"), ASN: 64512}, ""},
		{"no address", node("n1", nil, hostname, external), mesh.Node{}, "no address"},
		{"bad asn", node("n1", map[string]string{kubemesh.AnnotationASN: "0"}, internal("10.0.0.1")), mesh.Node{}, "not an ASN"},
		{"asn too big", node("n1", map[string]string{kubemesh.AnnotationASN: "4294967296"}, internal("10.0.0.1")), mesh.Node{}, "not an ASN"},
		{"v6 in the v4 annotation", node("n1", map[string]string{kubemesh.AnnotationIPv4: "fd00::1"}, internal("10.0.0.1")), mesh.Node{}, "not an IPv4"},
		{"v4 in the v6 annotation", node("n1", map[string]string{kubemesh.AnnotationIPv6: "10.0.0.1"}, internal("10.0.0.1")), mesh.Node{}, "not an IPv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kubemesh.NodeFromObject(tc.node, 64512)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, equateAddrs); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// On a real API server: the mesh follows Nodes as they are created,
// annotated and deleted.
func TestWatchFollowsNodes(t *testing.T) {
	k := harness.StartKube(t)
	core, err := corev1client.NewForConfig(k.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	create := func(n *corev1.Node) {
		t.Helper()
		if _, err := core.Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create(node("node-a", nil, internal("10.1.0.1")))

	inf := kube.NodeInformer(core)
	go inf.RunWithContext(ctx)
	reg, err := kubemesh.New(inf, core, kubemesh.Options{DefaultASN: 64512})
	if err != nil {
		t.Fatal(err)
	}
	calls := make(chan []mesh.Node, 16)
	go reg.Watch(ctx, func(n []mesh.Node) { calls <- n })
	expect := func(what string, want ...mesh.Node) {
		t.Helper()
		select {
		case got := <-calls:
			if diff := cmp.Diff(want, got, equateAddrs, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("%s: (-want +got):\n%s", what, diff)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no call within 10s", what)
		}
	}
	a := mesh.Node{Name: "node-a", IPv4: netip.MustParseAddr("10.1.0.1"), ASN: 64512}
	expect("first call", a)

	create(node("node-b", nil, internal("10.1.0.2"), internal("fd00:1::2")))
	b := mesh.Node{Name: "node-b", IPv4: netip.MustParseAddr("10.1.0.2"), IPv6: netip.MustParseAddr("fd00:1::2"), ASN: 64512}
	expect("node added", a, b)

	patch := []byte(`{"metadata":{"annotations":{"flatnet.io/asn":"65010"}}}`)
	if _, err := core.Nodes().Patch(ctx, "node-b", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	b.ASN = 65010
	expect("ASN annotated", a, b)

	// A change that does not touch the record (a label) does not call fn.
	if _, err := core.Nodes().Patch(ctx, "node-a", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := core.Nodes().Delete(ctx, "node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("node deleted", b)

	// Register writes nothing; it wants the Node to exist.
	if err := reg.Register(ctx, b); err != nil {
		t.Errorf("Register(existing node) = %v", err)
	}
	if err := reg.Register(ctx, mesh.Node{Name: "node-z"}); !errors.Is(err, kubemesh.ErrNoNode) {
		t.Errorf("Register(missing node) = %v, want ErrNoNode", err)
	}
}
