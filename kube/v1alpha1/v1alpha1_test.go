package v1alpha1_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
	"github.com/flatnet-io/flatnet/test/harness"
)

// fill sets every field reachable from v to a non-zero value.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(int64(*n), 0)))
			return
		}
		if v.Type() == reflect.TypeOf(metav1.Time{}) {
			v.Set(reflect.ValueOf(metav1.Unix(int64(*n), 0)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", *n%7))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n % 200))
	}
}

// A deep copy equals its original and shares no memory with it: filling the
// copy anew leaves the original as it was. A field added to a type without a
// copy in deepcopy.go fails this.
func TestDeepCopy(t *testing.T) {
	for _, obj := range []runtime.Object{
		&v1alpha1.IPPool{}, &v1alpha1.IPPoolList{},
		&v1alpha1.IPAMBlock{}, &v1alpha1.IPAMBlockList{},
		&v1alpha1.BGPPeer{}, &v1alpha1.BGPPeerList{},
	} {
		n := 0
		fill(reflect.ValueOf(obj).Elem(), &n)
		cp := obj.DeepCopyObject()
		if diff := cmp.Diff(obj, cp); diff != "" {
			t.Errorf("%T: copy differs (-orig +copy):\n%s", obj, diff)
		}
		before := obj.DeepCopyObject()
		n = 1000
		fill(reflect.ValueOf(cp).Elem(), &n)
		if diff := cmp.Diff(before, obj); diff != "" {
			t.Errorf("%T: changing the copy changed the original:\n%s", obj, diff)
		}
	}
}

// Every field of the Go types is in the CRD's schema, and the other way
// round: the API server silently drops fields its schema lacks.
func TestTypesMatchCRDs(t *testing.T) {
	for file, typ := range map[string]reflect.Type{
		"flatnet.io_ippools.yaml":    reflect.TypeOf(v1alpha1.IPPoolSpec{}),
		"flatnet.io_ipamblocks.yaml": reflect.TypeOf(v1alpha1.IPAMBlockSpec{}),
		"flatnet.io_bgppeers.yaml":   reflect.TypeOf(v1alpha1.BGPPeerSpec{}),
	} {
		data, err := os.ReadFile(filepath.Join(harness.Root(), "deploy", "crds", file))
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Group    string
				Versions []struct {
					Name   string
					Schema struct {
						OpenAPIV3Schema schema `json:"openAPIV3Schema"`
					}
				}
			}
		}
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if crd.Spec.Group != v1alpha1.Group || len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != v1alpha1.Version {
			t.Errorf("%s: not %s only", file, v1alpha1.GroupVersion)
			continue
		}
		spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
		got, want := schemaFields("spec", spec), goFields("spec", typ)
		slices.Sort(got)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: schema fields (-Go +schema):\n%s", file, diff)
		}
	}
}

type schema struct {
	Type       string
	Properties map[string]schema
	Items      *schema
}

func schemaFields(prefix string, s schema) []string {
	var out []string
	if s.Items != nil {
		return schemaFields(prefix+"[]", *s.Items)
	}
	for name, p := range s.Properties {
		out = append(out, prefix+"."+name)
		out = append(out, schemaFields(prefix+"."+name, p)...)
	}
	return out
}

func goFields(prefix string, t reflect.Type) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		if t.Kind() == reflect.Slice {
			prefix += "[]"
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Time{}) || t == reflect.TypeOf(metav1.Duration{}) {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, prefix+"."+name)
		if f.Type == reflect.TypeOf(&metav1.LabelSelector{}) {
			out = append(out, prefix+"."+name+".matchLabels", prefix+"."+name+".matchExpressions",
				prefix+"."+name+".matchExpressions[].key", prefix+"."+name+".matchExpressions[].operator",
				prefix+"."+name+".matchExpressions[].values")
			continue
		}
		out = append(out, goFields(prefix+"."+name, f.Type)...)
	}
	return out
}

func TestPool(t *testing.T) {
	for _, tc := range []struct {
		cidr      string
		blockSize int
		want      ipam.Pool
		wantErr   bool
	}{
		{"10.244.0.0/16", 0, ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}, false},
		{"fd00:10:244::/56", 0, ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("fd00:10:244::/56"), BlockSize: 122}, false},
		{"10.244.0.0/16", 24, ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 24}, false},
		{"10.244.0.1/16", 0, ipam.Pool{}, true},
		{"10.244.0.0/16", 19, ipam.Pool{}, true},
		{"nope", 0, ipam.Pool{}, true},
	} {
		p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.IPPoolSpec{CIDR: tc.cidr, BlockSize: tc.blockSize}}
		got, err := p.Pool()
		if (err != nil) != tc.wantErr {
			t.Errorf("%s /%d: err %v, want error %v", tc.cidr, tc.blockSize, err, tc.wantErr)
			continue
		}
		if err == nil && (got.Name != tc.want.Name || got.CIDR != tc.want.CIDR || got.BlockSize != tc.want.BlockSize) {
			t.Errorf("%s /%d: %+v, want %+v", tc.cidr, tc.blockSize, got, tc.want)
		}
	}
}

func TestPeer(t *testing.T) {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor-a"}, Spec: v1alpha1.BGPPeerSpec{
		Address:              "192.0.2.1",
		ASN:                  65000,
		Port:                 1179,
		Password:             &v1alpha1.BGPPassword{SecretKey: "tor-a"},
		Multihop:             2,
		HoldTime:             &metav1.Duration{Duration: 9 * time.Second},
		KeepaliveInterval:    &metav1.Duration{Duration: 3 * time.Second},
		Passive:              true,
		RouteReflectorClient: true,
		Import:               &v1alpha1.BGPImport{Allow: []string{"10.96.0.0/12"}, AllowDefault: true},
		MaxPrefixes:          1000,
		BFD:                  &v1alpha1.BGPBFD{Interval: &metav1.Duration{Duration: 300 * time.Millisecond}, Multiplier: 3},
	}}
	secrets := map[string]string{"tor-a": "s3cret"}
	got, err := p.Peer(func(key string) (string, error) {
		if v, ok := secrets[key]; ok {
			return v, nil
		}
		return "", errors.New("no such key")
	})
	if err != nil {
		t.Fatal(err)
	}
	want := bgp.Peer{
		Name: "peer-tor-a", Address: netip.MustParseAddr("192.0.2.1"), Port: 1179, ASN: 65000, Password: "s3cret",
		RRClient: true, Multihop: 2, HoldTime: 9 * time.Second, KeepaliveInterval: 3 * time.Second, Passive: true,
		Import:      bgp.ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, AllowDefault: true},
		MaxPrefixes: 1000, BFD: &bgp.BFD{Interval: 300 * time.Millisecond, Multiplier: 3},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	delete(secrets, "tor-a")
	if _, err := p.Peer(func(string) (string, error) { return "", errors.New("no such key") }); err == nil {
		t.Error("a missing secret key is not an error")
	}
	p.Spec.Address = "nope"
	if _, err := p.Peer(nil); err == nil {
		t.Error("a bad address is not an error")
	}
}

func TestAppliesTo(t *testing.T) {
	rackA := map[string]string{"rack": "a"}
	for _, tc := range []struct {
		name string
		spec v1alpha1.BGPPeerSpec
		node string
		lbl  map[string]string
		want bool
	}{
		{"every node", v1alpha1.BGPPeerSpec{}, "n1", nil, true},
		{"named node", v1alpha1.BGPPeerSpec{Node: "n1"}, "n1", nil, true},
		{"other node", v1alpha1.BGPPeerSpec{Node: "n2"}, "n1", nil, false},
		{"selector matches", v1alpha1.BGPPeerSpec{NodeSelector: &metav1.LabelSelector{MatchLabels: rackA}}, "n1", rackA, true},
		{"selector does not", v1alpha1.BGPPeerSpec{NodeSelector: &metav1.LabelSelector{MatchLabels: rackA}}, "n1", map[string]string{"rack": "b"}, false},
	} {
		p := &v1alpha1.BGPPeer{Spec: tc.spec}
		if got, err := p.AppliesTo(tc.node, tc.lbl); err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
