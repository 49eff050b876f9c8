package kubestore_test

import (
	"context"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/ipam/storetest"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
	"github.com/flatnet-io/flatnet/test/harness"
)

// One API server for the whole test binary: starting one costs seconds. The
// tests run one after another and each starts from no blocks (reset).
var kube harness.SharedKube

func TestMain(m *testing.M) {
	if code, ok := storetest.ChildMain(allocateMany); ok { // a child of the multi-process tests
		os.Exit(code)
	}
	code := m.Run()
	kube.Stop(code != 0)
	os.Exit(code)
}

// setup returns the shared server with the CRDs installed and no blocks.
func setup(t testing.TB) *harness.Kube {
	t.Helper()
	k := kube.Get(t)
	if !crdsApplied {
		k.ApplyCRDs(t)
		crdsApplied = true
	}
	reset(t, k.RESTConfig())
	return k
}

// crdsApplied: the CRDs go in once per server (a failed attempt fails its
// test, and the next test tries again).
var crdsApplied bool

// reset deletes every block and waits until the server lists none.
func reset(t testing.TB, cfg *rest.Config) {
	t.Helper()
	c, err := v1alpha1.NewRESTClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Delete().Resource(v1alpha1.IPAMBlocks).Do(ctx).Error(); err != nil {
		t.Fatalf("delete all blocks: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		var l v1alpha1.IPAMBlockList
		if err := c.Get().Resource(v1alpha1.IPAMBlocks).Do(ctx).Into(&l); err != nil {
			t.Fatal(err)
		}
		if len(l.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d blocks left after delete", len(l.Items))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// open returns a store on cfg, closed when t ends.
func open(t testing.TB, cfg *rest.Config) *kubestore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := kubestore.New(ctx, cfg, kubestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// listBlocks reads every block from the server (not through a store's view).
func listBlocks(t testing.TB, cfg *rest.Config) []v1alpha1.IPAMBlock {
	t.Helper()
	c, err := v1alpha1.NewRESTClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var l v1alpha1.IPAMBlockList
	if err := c.Get().Resource(v1alpha1.IPAMBlocks).Do(context.Background()).Into(&l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func newAllocator(t testing.TB, s ipam.Store, node string, pools ...ipam.Pool) *ipam.Allocator {
	t.Helper()
	a, err := ipam.New(s, ipam.Config{Node: node, Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
