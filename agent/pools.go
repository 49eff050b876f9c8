package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// sourcedPool is a pool and where it is defined, for errors.
type sourcedPool struct {
	ipam.Pool
	from string // "ipam.pools[0]" or "IPPool default-ipv4"
}

// mergePools returns the allocator's pools: the config file's, then those of
// the IPPool objects objs, in order. A pool in both must be the same in both,
// and is listed once; pools must not overlap; an object that is not a valid
// pool is an error. Each error names where the pools it is about come from.
func mergePools(conf []config.Pool, objs []v1alpha1.IPPool) ([]ipam.Pool, error) {
	var all []sourcedPool
	for i, p := range conf {
		from := fmt.Sprintf("ipam.pools[%d]", i)
		pool, err := ipam.NewPool(p.Name, p.CIDR, p.BlockSize)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
		all = append(all, sourcedPool{pool, from})
	}
	for _, o := range objs {
		pool, err := o.Pool()
		if err != nil {
			return nil, err // it names the object
		}
		from := "IPPool " + o.Name
		if i := slices.IndexFunc(all, func(q sourcedPool) bool { return q.Name == pool.Name }); i >= 0 {
			if q := all[i]; q.CIDR != pool.CIDR || q.BlockSize != pool.BlockSize {
				return nil, fmt.Errorf("pool %s is defined twice, differently: %s is %s in /%d blocks, %s is %s in /%d blocks",
					pool.Name, q.from, q.CIDR, q.BlockSize, from, pool.CIDR, pool.BlockSize)
			}
			continue
		}
		all = append(all, sourcedPool{pool, from})
	}
	if len(all) == 0 {
		return nil, errors.New("no pools: neither ipam.pools nor any IPPool object")
	}
	pools := make([]ipam.Pool, len(all))
	for i, p := range all {
		for _, q := range all[:i] {
			if p.CIDR.Overlaps(q.CIDR) {
				return nil, fmt.Errorf("pool %s (%s, %s) overlaps pool %s (%s, %s)", p.Name, p.from, p.CIDR, q.Name, q.from, q.CIDR)
			}
		}
		pools[i] = p.Pool
	}
	return pools, nil
}

// warnPoolChanges logs a warning for each change to the IPPool objects
// after start, which the allocator does not follow: its pools are fixed.
// running are the objects it started with; an object that is as it was at
// start (the informer's first list) is not a change.
func warnPoolChanges(ippools cache.SharedIndexInformer, running []v1alpha1.IPPool, log *slog.Logger) error {
	specs := map[string]v1alpha1.IPPoolSpec{}
	for _, p := range running {
		specs[p.Name] = p.Spec
	}
	warn := func(name, change string) {
		log.Warn("ippool "+change+": restart the agent to apply (a planned restart keeps pod traffic)", "ippool", name)
	}
	_, err := ippools.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			p, ok := obj.(*v1alpha1.IPPool)
			if !ok {
				return
			}
			switch spec, known := specs[p.Name]; {
			case !known:
				warn(p.Name, "added")
			case spec != p.Spec:
				warn(p.Name, "changed")
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1alpha1.IPPool)
			c, ok2 := cur.(*v1alpha1.IPPool)
			if ok1 && ok2 && o.Spec != c.Spec {
				warn(c.Name, "changed")
			}
		},
		DeleteFunc: func(obj any) {
			if name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				warn(name, "deleted")
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch ippools: %w", err)
	}
	return nil
}
