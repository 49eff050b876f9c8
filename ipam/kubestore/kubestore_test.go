package kubestore_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/ipam/storetest"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

func TestContract(t *testing.T) {
	k := setup(t)
	storetest.Run(t, func(t *testing.T) storetest.Store {
		reset(t, k.RESTConfig())
		return open(t, k.RESTConfig())
	})
}

// Two stores are two agents: each sees the other's writes and cannot
// overwrite them blindly.
func TestContractTwoStores(t *testing.T) {
	k := setup(t)
	storetest.RunPair(t, open(t, k.RESTConfig()), open(t, k.RESTConfig()))
}

// A store's list shows another store's claim once the watch brings it.
func TestWatchBringsOtherWriters(t *testing.T) {
	k := setup(t)
	a, b := open(t, k.RESTConfig()), open(t, k.RESTConfig())
	pool := ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.50.0.0/24"), BlockSize: 28}
	got, err := newAllocator(t, a, "node-a", pool).Allocate(t.Context(), ipam.Request{Handle: "c1/eth0"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		blocks, _ := b.ListBlocks(t.Context())
		return len(blocks) == 1 && blocks[0].Affinity == "node-a" && blocks[0].Allocations[0].Addr == got[0].Addr
	})
	// And a release that deletes the block reaches the other's list too.
	if _, err := newAllocator(t, a, "node-a", pool).Release(t.Context(), "c1/eth0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		blocks, _ := b.ListBlocks(t.Context())
		return len(blocks) == 0
	})
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestObjectName(t *testing.T) {
	for _, tc := range []struct{ cidr, want string }{
		{"10.244.0.0/26", "10-244-0-0-26"},
		{"fd00:10:244::/122", "fd00-10-244---122"},
		{"fd00:10:244:0:1::40/122", "fd00-10-244-0-1--40-122"},
		{"::/120", "0---120"},
	} {
		if got := kubestore.ObjectName(netip.MustParsePrefix(tc.cidr)); got != tc.want {
			t.Errorf("ObjectName(%s) = %s, want %s", tc.cidr, got, tc.want)
		}
	}
}

// The schema keeps every block where the store looks for it: named after its
// canonical CIDR. A second object for one CIDR would break the claim's
// exclusivity.
func TestSchemaRejectsMisnamedBlocks(t *testing.T) {
	k := setup(t)
	c, err := v1alpha1.NewRESTClient(k.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, cidr, want string }{
		{"other-name", "10.0.0.0/26", "the name must be the CIDR"},
		{"10-0-0-1-26", "10.0.0.1/26", "canonical form"},
		{"fd00-0-0-0-0-0-0-0-122", "fd00:0:0:0:0:0:0:0/122", "canonical form"},
		{"10-0-0-0-26", "10.0.0.0/26x", "canonical form"},
	} {
		obj := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: tc.cidr, Affinity: "n"}}
		obj.Name = tc.name
		err := c.Post().Resource(v1alpha1.IPAMBlocks).Body(obj).Do(context.Background()).Error()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create %s (%s) = %v, want an error with %q", tc.name, tc.cidr, err, tc.want)
		}
	}
	ok := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: "::/120"}}
	ok.Name = kubestore.ObjectName(netip.MustParsePrefix("::/120"))
	if err := c.Post().Resource(v1alpha1.IPAMBlocks).Body(ok).Do(context.Background()).Error(); err != nil {
		t.Errorf("create %s: %v", ok.Name, err)
	}
}

// Without the CRD, the store says so instead of taking every block for free.
func TestNoCRDIsAnError(t *testing.T) {
	k := kube.Get(t)
	cfg := k.RESTConfig()
	cfg.Host += "/nowhere" // a path prefix the server serves nothing under
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := kubestore.New(ctx, cfg, kubestore.Options{})
	if err == nil || !strings.Contains(err.Error(), "CRDs installed") {
		t.Errorf("New without the resource = %v", err)
	}
	if errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("a missing resource reads as a missing block: %v", err)
	}
}
