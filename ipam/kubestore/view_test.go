package kubestore

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

func object(cidr, affinity, rv string) *v1alpha1.IPAMBlock {
	b := toObject(ipam.Block{CIDR: netip.MustParsePrefix(cidr), Affinity: affinity, Revision: rv})
	return b
}

// affinities returns the view's blocks as cidr → affinity@revision.
func affinities(t *testing.T, v *view) map[string]string {
	t.Helper()
	blocks, err := v.list()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range blocks {
		out[b.CIDR.String()] = b.Affinity + "@" + b.Revision
	}
	return out
}

func expect(t *testing.T, v *view, want map[string]string) {
	t.Helper()
	got := affinities(t, v)
	if len(got) != len(want) {
		t.Fatalf("view holds %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Fatalf("view holds %v, want %v", got, want)
		}
	}
}

// The watch may deliver a version after the store's own write returned a
// newer one: the view keeps the newer.
func TestViewKeepsTheNewestVersion(t *testing.T) {
	v := newView()
	v.observe(object("10.0.0.0/26", "a", "10"))                      // our write
	if err := v.Add(object("10.0.0.0/26", "old", "9")); err != nil { // the watch, late
		t.Fatal(err)
	}
	expect(t, v, map[string]string{"10.0.0.0/26": "a@10"})
	if err := v.Update(object("10.0.0.0/26", "b", "12")); err != nil { // another writer, later
		t.Fatal(err)
	}
	expect(t, v, map[string]string{"10.0.0.0/26": "b@12"})
}

// After our delete, late copies of the deleted block stay out; a new claim
// of the CIDR (a later version) comes in.
func TestViewDeleteTombstone(t *testing.T) {
	cidr := netip.MustParsePrefix("10.0.0.0/26")
	v := newView()
	v.observe(object("10.0.0.0/26", "a", "10"))
	v.forget(cidr, 10, true)
	if err := v.Add(object("10.0.0.0/26", "a", "10")); err != nil { // late watch event of the version we deleted
		t.Fatal(err)
	}
	expect(t, v, map[string]string{})
	if err := v.Add(object("10.0.0.0/26", "b", "15")); err != nil { // claimed again
		t.Fatal(err)
	}
	expect(t, v, map[string]string{"10.0.0.0/26": "b@15"})
	if err := v.Delete(object("10.0.0.0/26", "b", "16")); err != nil {
		t.Fatal(err)
	}
	expect(t, v, map[string]string{})
}

// A watch delete that is older than what we wrote since does not remove it.
func TestViewDeleteOlderThanOurs(t *testing.T) {
	v := newView()
	v.observe(object("10.0.0.0/26", "a", "20"))
	if err := v.Delete(cache.DeletedFinalStateUnknown{Key: "x", Obj: object("10.0.0.0/26", "a", "12")}); err != nil {
		t.Fatal(err)
	}
	expect(t, v, map[string]string{"10.0.0.0/26": "a@20"})
}

// A relist replaces what the watch brought, but keeps our writes made after
// the list's version, and drops blocks the list lacks.
func TestViewReplace(t *testing.T) {
	v := newView()
	if err := v.Add(object("10.0.0.0/26", "a", "5")); err != nil {
		t.Fatal(err)
	}
	if err := v.Add(object("10.0.0.64/26", "gone", "6")); err != nil {
		t.Fatal(err)
	}
	v.observe(object("10.0.0.128/26", "ours", "31")) // written after the list below
	if err := v.Replace([]any{object("10.0.0.0/26", "a2", "7")}, "30"); err != nil {
		t.Fatal(err)
	}
	expect(t, v, map[string]string{"10.0.0.0/26": "a2@7", "10.0.0.128/26": "ours@31"})
	select {
	case <-v.synced:
	default:
		t.Error("Replace did not mark the view synced")
	}
}

// An object that is not a block makes listing fail, naming it, until it is
// gone.
func TestViewBrokenObject(t *testing.T) {
	v := newView()
	bad := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: "junk", ResourceVersion: "3"}, Spec: v1alpha1.IPAMBlockSpec{CIDR: "nope"}}
	if err := v.Add(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := v.list(); err == nil {
		t.Fatal("list with a broken object: no error")
	}
	if err := v.Delete(bad); err != nil {
		t.Fatal(err)
	}
	expect(t, v, map[string]string{})
}

func TestConvertRoundTrip(t *testing.T) {
	for _, b := range []ipam.Block{
		{CIDR: netip.MustParsePrefix("fd00:10:244::/122"), Affinity: "n1", Revision: "7", Allocations: []ipam.Allocation{
			{Addr: netip.MustParseAddr("fd00:10:244::1"), Handle: "c/eth0", Attrs: ipam.Attrs{Node: "n1", Namespace: "ns", Pod: "p"},
				Allocated: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)},
			{Handle: "no-address"},
		}},
		{CIDR: netip.MustParsePrefix("10.0.0.0/26"), Revision: "8", EmptySince: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)},
	} {
		got, err := fromObject(toObject(b))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(b, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}
