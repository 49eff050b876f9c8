package kubestore

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// ObjectName is the name of the IPAMBlock object of the block at cidr: its
// canonical text with ".", ":" and "/" replaced by "-" (10.244.0.0/26 is
// 10-244-0-0-26, fd00:10:244::/122 is fd00-10-244---122), with a "0" in front
// when that would start with "-". One CIDR has one name, so the API server's
// uniqueness of names is what makes a claim exclusive; the CRD's schema
// checks that every object is named so. (IPv4-mapped IPv6 blocks, whose
// names could collide, are refused by the schema.)
func ObjectName(cidr netip.Prefix) string {
	n := strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(cidr.Masked().String())
	if strings.HasPrefix(n, "-") {
		n = "0" + n
	}
	return n
}

// WriteAnnotation changes on every write. The API server keeps the
// resourceVersion of an update that changes nothing, and the Store contract
// wants every update to retire the revision it replaced.
const WriteAnnotation = "flatnet.io/write"

// toObject returns the object that stores b, with b's revision as its
// resourceVersion.
func toObject(b ipam.Block) *v1alpha1.IPAMBlock {
	obj := &v1alpha1.IPAMBlock{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "IPAMBlock"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            ObjectName(b.CIDR),
			ResourceVersion: b.Revision,
			Annotations:     map[string]string{WriteAnnotation: strconv.FormatUint(rand.Uint64(), 36)},
		},
		Spec: v1alpha1.IPAMBlockSpec{CIDR: b.CIDR.String(), Affinity: b.Affinity},
	}
	if !b.EmptySince.IsZero() {
		t := b.EmptySince
		obj.Spec.EmptySince = &t
	}
	if len(b.Allocations) > 0 {
		obj.Spec.Allocations = make([]v1alpha1.IPAMAllocation, len(b.Allocations))
	}
	for i, a := range b.Allocations {
		obj.Spec.Allocations[i] = v1alpha1.IPAMAllocation{
			Address:   addrString(a.Addr),
			Handle:    a.Handle,
			Node:      a.Attrs.Node,
			Namespace: a.Attrs.Namespace,
			Pod:       a.Attrs.Pod,
			Allocated: a.Allocated,
		}
	}
	return obj
}

// fromObject returns the block obj stores, its revision the object's
// resourceVersion. An object that does not describe a block (a CIDR that does
// not parse or does not match the name) is an error.
func fromObject(obj *v1alpha1.IPAMBlock) (ipam.Block, error) {
	cidr, err := netip.ParsePrefix(obj.Spec.CIDR)
	if err != nil {
		return ipam.Block{}, fmt.Errorf("ipamblock %s: cidr: %w", obj.Name, err)
	}
	if want := ObjectName(cidr); obj.Name != want {
		return ipam.Block{}, fmt.Errorf("ipamblock %s: block %s must be named %s", obj.Name, cidr, want)
	}
	b := ipam.Block{CIDR: cidr, Affinity: obj.Spec.Affinity, Revision: obj.ResourceVersion}
	if obj.Spec.EmptySince != nil {
		b.EmptySince = obj.Spec.EmptySince.UTC()
	}
	if len(obj.Spec.Allocations) > 0 {
		b.Allocations = make([]ipam.Allocation, len(obj.Spec.Allocations))
	}
	for i, a := range obj.Spec.Allocations {
		addr, err := parseAddr(a.Address)
		if err != nil {
			return ipam.Block{}, fmt.Errorf("ipamblock %s: allocation %s: %w", obj.Name, a.Handle, err)
		}
		b.Allocations[i] = ipam.Allocation{
			Addr:      addr,
			Handle:    a.Handle,
			Attrs:     ipam.Attrs{Node: a.Node, Namespace: a.Namespace, Pod: a.Pod},
			Allocated: a.Allocated,
		}
	}
	return b, nil
}

// addrString and parseAddr keep an unset address (which only the Store
// contract's tests write) as "".
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(s)
}
