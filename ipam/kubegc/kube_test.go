package kubegc_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/kubegc"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/kube"
	"github.com/flatnet-io/flatnet/test/harness"
)

// On a real API server: the address of a pod deleted from the API is
// released after the grace period, a live pod's is not, and the block of a
// deleted Node is reclaimed.
func TestCollectOnAPIServer(t *testing.T) {
	k := harness.StartKube(t)
	k.ApplyCRDs(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	core, err := corev1client.NewForConfig(k.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if _, err := core.Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"live", "doomed"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: p},
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if _, err := core.Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	store, err := kubestore.New(ctx, k.RESTConfig(), kubestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n1, err := ipam.New(store, ipam.Config{Node: "n1", Pools: []ipam.Pool{pool}})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := ipam.New(store, ipam.Config{Node: "n2", Pools: []ipam.Pool{pool}})
	if err != nil {
		t.Fatal(err)
	}
	allocate(t, n1, "live/eth0", "default", "live")
	allocate(t, n1, "doomed/eth0", "default", "doomed")
	allocate(t, n2, "other/eth0", "default", "other")

	pods, nodes := kube.PodInformer(core, "n1"), kube.NodeInformer(core)
	go pods.RunWithContext(ctx)
	go nodes.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, nodes.HasSynced) {
		t.Fatal("informers did not sync")
	}
	const grace = time.Second
	c, err := kubegc.New(store, n1, kubegc.FromInformers(pods, nodes, core), kubegc.Config{Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Collect(ctx); err != nil || len(res.Released)+len(res.Reclaimed) > 0 {
		t.Fatalf("first pass: %+v, %v; want nothing", res, err)
	}
	// With no kubelet to finish a graceful deletion, delete it the way the
	// kubelet does at the end: with no grace left. (A terminating pod still
	// holds its address: its sandbox runs until the kubelet tears it down.)
	zero := int64(0)
	if err := core.Pods("default").Delete(ctx, "doomed", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if err := core.Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	var released []ipam.Allocation
	var reclaimed int
	for deadline := time.Now().Add(20 * time.Second); len(released) == 0 || reclaimed == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: released %v, reclaimed %d blocks", handles(released), reclaimed)
		}
		time.Sleep(200 * time.Millisecond)
		res, err := c.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if (len(res.Released) > 0 || len(res.Reclaimed) > 0) && time.Since(deleted) < grace {
			t.Fatalf("released %+v before the grace period", res)
		}
		released = append(released, res.Released...)
		reclaimed += len(res.Reclaimed)
	}
	if got := handles(released); !slices.Equal(got, []string{"doomed/eth0"}) {
		t.Errorf("released %v, want doomed/eth0", got)
	}
	if got, want := held(t, store), []string{"live/eth0"}; !slices.Equal(got, want) {
		t.Errorf("blocks hold %v, want %v", got, want)
	}
	t.Logf("released %s and n2's block %v after deletion", released[0].Addr, time.Since(deleted).Round(10*time.Millisecond))
}
