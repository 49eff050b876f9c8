package kubestore

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// view is this process's copy of every block: what the watch delivers, plus
// what the store's own writes returned, whichever is newer. Own writes go in
// at once, so the allocator's next read sees them without waiting for the
// watch; a version the watch delivers late never replaces a newer one.
//
// It is the reflector's store (cache.ReflectorStore): the list and the watch
// land here, converted once per version, with no second copy in an informer.
// Newer means a higher resourceVersion: the API server's versions are etcd
// revisions, increasing integers. Ordering is only a hint for reads, never a
// basis for writes: every write is a compare-and-swap on the server.
type view struct {
	mu     sync.Mutex
	blocks map[netip.Prefix]entry
	// deleted holds, for each block this process deleted, the version it
	// deleted: versions up to it are stale copies the watch may still bring.
	deleted map[netip.Prefix]uint64
	// broken holds objects that do not describe a block, by name.
	broken map[string]error
	synced chan struct{} // closed by the first Replace
}

type entry struct {
	rv    uint64
	block ipam.Block
}

var _ cache.ReflectorStore = (*view)(nil)

func newView() *view {
	return &view{
		blocks:  map[netip.Prefix]entry{},
		deleted: map[netip.Prefix]uint64{},
		broken:  map[string]error{},
		synced:  make(chan struct{}),
	}
}

// version parses a resourceVersion; 0 means unknown, and loses every
// comparison but a tie.
func version(rv string) uint64 {
	n, _ := strconv.ParseUint(rv, 10, 64)
	return n
}

// list returns a copy of every block, or an error naming an object that is
// not a block.
func (v *view) list() ([]ipam.Block, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.broken) > 0 {
		names := make([]string, 0, len(v.broken))
		for n := range v.broken {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%d ipamblock objects unusable, first: %w", len(names), v.broken[names[0]])
	}
	out := make([]ipam.Block, 0, len(v.blocks))
	for _, e := range v.blocks {
		out = append(out, e.block.Clone())
	}
	return out, nil
}

// observe records a version of a block unless a newer one is known.
func (v *view) observe(obj *v1alpha1.IPAMBlock) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.observeLocked(obj)
}

func (v *view) observeLocked(obj *v1alpha1.IPAMBlock) {
	b, err := fromObject(obj)
	if err != nil {
		v.broken[obj.Name] = err
		return
	}
	delete(v.broken, obj.Name)
	rv := version(obj.ResourceVersion)
	if del, ok := v.deleted[b.CIDR]; ok {
		if rv != 0 && rv <= del {
			return // a copy from before our delete
		}
		delete(v.deleted, b.CIDR) // claimed again since
	}
	if cur, ok := v.blocks[b.CIDR]; ok && rv < cur.rv {
		return
	}
	v.blocks[b.CIDR] = entry{rv: rv, block: b}
}

// forget drops the block at cidr if the view's copy is no newer than rv: it
// was deleted at rv (by us: remember that), or is gone.
func (v *view) forget(cidr netip.Prefix, rv uint64, deletedByUs bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.blocks[cidr]; ok && cur.rv <= rv {
		delete(v.blocks, cidr)
	}
	if deletedByUs && rv > v.deleted[cidr] {
		v.deleted[cidr] = rv
	}
}

// Add implements cache.ReflectorStore.
func (v *view) Add(obj any) error {
	b, ok := obj.(*v1alpha1.IPAMBlock)
	if !ok {
		return fmt.Errorf("ipamblock watch: unexpected %T", obj)
	}
	v.observe(b)
	return nil
}

// Update implements cache.ReflectorStore.
func (v *view) Update(obj any) error { return v.Add(obj) }

// Delete implements cache.ReflectorStore: the object carries the version of
// its deletion.
func (v *view) Delete(obj any) error {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(*v1alpha1.IPAMBlock)
	if !ok {
		return fmt.Errorf("ipamblock watch: unexpected %T", obj)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.broken, o.Name)
	cidr, err := netip.ParsePrefix(o.Spec.CIDR)
	if err != nil {
		return nil
	}
	rv := version(o.ResourceVersion)
	if cur, ok := v.blocks[cidr]; ok && cur.rv <= rv {
		delete(v.blocks, cidr)
	}
	if del, ok := v.deleted[cidr]; ok && del <= rv {
		delete(v.deleted, cidr) // the watch has caught up with our delete
	}
	return nil
}

// Replace implements cache.ReflectorStore: the list at version rv. Blocks the
// list lacks are gone, unless our own writes made them after it.
func (v *view) Replace(objs []any, rv string) error {
	at := version(rv)
	v.mu.Lock()
	defer v.mu.Unlock()
	listed := make(map[netip.Prefix]bool, len(objs))
	clear(v.broken)
	for _, obj := range objs {
		o, ok := obj.(*v1alpha1.IPAMBlock)
		if !ok {
			return fmt.Errorf("ipamblock list: unexpected %T", obj)
		}
		v.observeLocked(o)
		if cidr, err := netip.ParsePrefix(o.Spec.CIDR); err == nil {
			listed[cidr] = true
		}
	}
	for cidr, e := range v.blocks {
		if !listed[cidr] && (e.rv <= at || at == 0) {
			delete(v.blocks, cidr)
		}
	}
	for cidr, del := range v.deleted {
		if del <= at {
			delete(v.deleted, cidr) // the list is past our delete
		}
	}
	select {
	case <-v.synced:
	default:
		close(v.synced)
	}
	return nil
}

// Resync implements cache.ReflectorStore; there is nothing to resync.
func (v *view) Resync() error { return nil }
