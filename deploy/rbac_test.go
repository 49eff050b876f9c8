package deploy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/bgp/mesh/kubemesh"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/kubegc"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/kube"
	"github.com/flatnet-io/flatnet/test/harness"
)

// With the deploy ClusterRole bound to the agent's ServiceAccount, the agent's
// parts work under that identity — a bound token from the TokenRequest API,
// as the kubelet would mount it — and it can do nothing more: no Secrets, no
// writes to Pods or Nodes.
func TestAgentIdentity(t *testing.T) {
	k := server.Get(t)
	k.ApplyCRDs(t)
	k.MustKubectl(t, "apply", "--server-side", "-k", dir)
	k.MustKubectl(t, "apply", "-f", writeFile(t, "node.yaml", `apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses: [{type: InternalIP, address: 192.0.2.11}]
`))
	token := k.ServiceAccountToken(t, "kube-system", "flatnet")
	kubeconfig := k.KubeconfigForToken(t, token)

	who, err := harness.Kubectl(kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil || who != "system:serviceaccount:kube-system:flatnet" {
		t.Fatalf("the token authenticates as %q (%v)", who, err)
	}
	checks := []struct {
		verb, resource string
		want           string
	}{
		{"watch", "ipamblocks.flatnet.io", "yes"},
		{"create", "ipamblocks.flatnet.io", "yes"},
		{"update", "ipamblocks.flatnet.io", "yes"},
		{"delete", "ipamblocks.flatnet.io", "yes"},
		{"list", "ippools.flatnet.io", "yes"},
		{"watch", "bgppeers.flatnet.io", "yes"},
		{"watch", "nodes", "yes"},
		{"get", "pods", "yes"},
		{"watch", "pods", "yes"},
		{"watch", "namespaces", "yes"},
		{"list", "networkpolicies.networking.k8s.io", "yes"},
		{"watch", "networkpolicies.networking.k8s.io", "yes"},

		{"get", "secrets", "no"},
		{"list", "secrets", "no"},
		{"watch", "secrets", "no"},
		{"create", "pods", "no"},
		{"update", "pods", "no"},
		{"patch", "pods", "no"},
		{"delete", "pods", "no"},
		{"create", "pods/eviction", "no"},
		{"update", "nodes", "no"},
		{"patch", "nodes", "no"},
		{"delete", "nodes", "no"},
		{"patch", "ipamblocks.flatnet.io", "no"},
		{"deletecollection", "ipamblocks.flatnet.io", "no"},
		{"create", "ippools.flatnet.io", "no"},
		{"delete", "bgppeers.flatnet.io", "no"},
		{"update", "clusterroles", "no"},
		{"create", "networkpolicies.networking.k8s.io", "no"},
		{"update", "namespaces", "no"},
	}
	var wg sync.WaitGroup
	limit := make(chan struct{}, 4) // kubectl is slow to start; a few at a time
	for _, tc := range checks {
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			// -A: in every namespace (the binding is cluster-wide).
			out, _ := harness.Kubectl(kubeconfig, "auth", "can-i", tc.verb, tc.resource, "-A")
			if got := strings.TrimSpace(out); got != tc.want {
				t.Errorf("kubectl auth can-i %s %s -A = %q, want %s", tc.verb, tc.resource, got, tc.want)
			}
		})
	}
	wg.Wait()

	// What the agent does at start, under that identity.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg := k.RESTConfigForToken(token)
	store, err := kubestore.New(ctx, cfg, kubestore.Options{})
	if err != nil {
		t.Fatalf("open the store as the agent: %v", err)
	}
	defer store.Close()
	alloc, err := ipam.New(store, ipam.Config{Node: "node-1", Pools: []ipam.Pool{
		{Name: "v4", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26},
		{Name: "v6", CIDR: netip.MustParsePrefix("fd00:10:244::/56"), BlockSize: 122},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := alloc.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("c%d/eth0", i), Attrs: ipam.Attrs{Namespace: "default", Pod: fmt.Sprint("p", i)}})
		if err != nil || len(got) != 2 {
			t.Fatalf("allocate as the agent: %v, %v", got, err)
		}
	}
	if _, err := alloc.Release(ctx, "c0/eth0"); err != nil {
		t.Fatalf("release as the agent: %v", err)
	}

	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodes, pods := kube.NodeInformer(core), kube.PodInformer(core, "node-1")
	go nodes.RunWithContext(ctx)
	go pods.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), nodes.HasSynced, pods.HasSynced) {
		t.Fatal("node and pod informers did not sync as the agent")
	}
	reg, err := kubemesh.New(nodes, core, kubemesh.Options{DefaultASN: 64512})
	if err != nil {
		t.Fatal(err)
	}
	self := mesh.Node{Name: "node-1", IPv4: netip.MustParseAddr("192.0.2.11"), ASN: 64512}
	if err := reg.Register(ctx, self); err != nil {
		t.Errorf("register as the agent: %v", err)
	}
	if got := reg.List(); len(got) != 1 || got[0] != self {
		t.Errorf("mesh as the agent sees it: %+v", got)
	}
	gc, err := kubegc.New(store, alloc, kubegc.FromInformers(pods, nodes, core), kubegc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Collect(ctx); err != nil {
		t.Errorf("garbage collection as the agent: %v", err)
	}

	// The policy informers sync under that identity.
	networking, err := networkingv1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	policyInformers := []cache.SharedIndexInformer{kube.NetworkPolicyInformer(networking), kube.NamespaceInformer(core), kube.AllPodsInformer(core)}
	var synced []cache.InformerSynced
	for _, inf := range policyInformers {
		go inf.RunWithContext(ctx)
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		t.Error("policy informers did not sync as the agent")
	}

	// And the API itself refuses the rest.
	if _, err := core.Secrets("kube-system").List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("the agent listed Secrets")
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if _, err := core.Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err == nil {
		t.Error("the agent created a Pod")
	}
}
