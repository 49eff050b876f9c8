package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

func ippool(name, cidr string, blockSize int) v1alpha1.IPPool {
	return v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
}

func TestMergePools(t *testing.T) {
	v4 := config.Pool{Name: "v4", CIDR: pfx("10.244.0.0/16"), BlockSize: 26}
	for _, tc := range []struct {
		name    string
		conf    []config.Pool
		objs    []v1alpha1.IPPool
		want    []string // name=cidr/blockSize, in order
		wantErr string
	}{
		{name: "config only", conf: []config.Pool{v4}, want: []string{"v4=10.244.0.0/16/26"}},
		{name: "objects only, block size defaulted", objs: []v1alpha1.IPPool{ippool("a", "10.1.0.0/16", 0), ippool("b", "fd00::/64", 0)},
			want: []string{"a=10.1.0.0/16/26", "b=fd00::/64/122"}},
		{name: "config first", conf: []config.Pool{v4}, objs: []v1alpha1.IPPool{ippool("a", "10.1.0.0/16", 24)},
			want: []string{"v4=10.244.0.0/16/26", "a=10.1.0.0/16/24"}},
		{name: "the same pool in both is listed once", conf: []config.Pool{v4}, objs: []v1alpha1.IPPool{ippool("v4", "10.244.0.0/16", 0)},
			want: []string{"v4=10.244.0.0/16/26"}},
		{name: "same name, other CIDR", conf: []config.Pool{v4}, objs: []v1alpha1.IPPool{ippool("v4", "10.245.0.0/16", 26)},
			wantErr: "pool v4 is defined twice, differently: ipam.pools[0] is 10.244.0.0/16 in /26 blocks, IPPool v4 is 10.245.0.0/16 in /26 blocks"},
		{name: "same name, other block size", conf: []config.Pool{v4}, objs: []v1alpha1.IPPool{ippool("v4", "10.244.0.0/16", 24)},
			wantErr: "ipam.pools[0] is 10.244.0.0/16 in /26 blocks, IPPool v4 is 10.244.0.0/16 in /24 blocks"},
		{name: "object overlaps config", conf: []config.Pool{v4}, objs: []v1alpha1.IPPool{ippool("inner", "10.244.8.0/24", 0)},
			wantErr: "pool inner (IPPool inner, 10.244.8.0/24) overlaps pool v4 (ipam.pools[0], 10.244.0.0/16)"},
		{name: "objects overlap", objs: []v1alpha1.IPPool{ippool("a", "10.1.0.0/16", 0), ippool("b", "10.0.0.0/8", 0)},
			wantErr: "pool b (IPPool b, 10.0.0.0/8) overlaps pool a (IPPool a, 10.1.0.0/16)"},
		{name: "malformed object", conf: []config.Pool{v4}, objs: []v1alpha1.IPPool{ippool("bad", "10.1.0.1/16", 0)},
			wantErr: "ippool bad:"},
		{name: "block size out of range", objs: []v1alpha1.IPPool{ippool("big", "10.1.0.0/16", 19)},
			wantErr: "ippool big: pool big: invalid request: block size /19 outside /20../32"},
		{name: "no pools", wantErr: "no pools: neither ipam.pools nor any IPPool object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools, err := mergePools(tc.conf, tc.objs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("mergePools() = %v, %v; want an error containing %q", pools, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, poolStrings(pools)); diff != "" {
				t.Errorf("pools (-want +got):\n%s", diff)
			}
		})
	}
}

func poolStrings(pools []ipam.Pool) []string {
	var out []string
	for _, p := range pools {
		out = append(out, fmt.Sprintf("%s=%s/%d", p.Name, p.CIDR, p.BlockSize))
	}
	return out
}
