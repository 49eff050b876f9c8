// Package kubemesh is the mesh.Registry of the Kubernetes datastore: the
// flatnet nodes are the cluster's Node objects, read through a shared
// informer, so nodes that join or leave the cluster join or leave the mesh
// live.
//
// A node's BGP addresses are its first InternalIP of each family; its ASN is
// the registry's default. Annotations on the Node override them:
// flatnet.io/ipv4-address, flatnet.io/ipv6-address and flatnet.io/asn. A Node
// whose annotations do not parse, or that has no address, is left out of the
// mesh and logged.
//
// The Node object is the record: Register writes nothing (the
// kubelet creates Nodes, and deleting one removes it from the mesh), so the
// agent needs only to read Nodes. The package must not speak BGP nor decide
// whom to peer with: mesh.Peers does.
package kubemesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/bgp/mesh"
)

// Annotations on a Node that override what the registry derives from it.
const (
	AnnotationASN  = "flatnet.io/asn"
	AnnotationIPv4 = "flatnet.io/ipv4-address"
	AnnotationIPv6 = "flatnet.io/ipv6-address"
)

// ErrNoNode: Register was asked for a node the cluster has no Node object for.
var ErrNoNode = errors.New("no such Node object")

// Options tune a Registry.
type Options struct {
	// DefaultASN is the ASN of a node without the flatnet.io/asn annotation.
	DefaultASN uint32
	Logger     *slog.Logger // nil: discard
}

// Registry reads the mesh from Node objects.
type Registry struct {
	nodes cache.SharedIndexInformer
	api   corev1client.NodesGetter
	opts  Options
	log   *slog.Logger

	mu      sync.Mutex
	invalid map[string]string // node → why it is left out, as last logged
}

var _ mesh.Registry = (*Registry)(nil)

// New returns a registry over the Node informer nodes (see kube.NodeInformer),
// which the caller runs, and api for Register's read of the live object.
func New(nodes cache.SharedIndexInformer, api corev1client.NodesGetter, opts Options) (*Registry, error) {
	if opts.DefaultASN == 0 {
		return nil, fmt.Errorf("node registry: default ASN 0")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{nodes: nodes, api: api, opts: opts, log: log, invalid: map[string]string{}}, nil
}

// NodeFromObject derives n's mesh record: the annotations if set, else the
// first InternalIP of each family, and defaultASN.
func NodeFromObject(n *corev1.Node, defaultASN uint32) (mesh.Node, error) {
	rec := mesh.Node{Name: n.Name, ASN: defaultASN}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !rec.IPv4.IsValid():
			rec.IPv4 = ip
		case ip.Is6() && !rec.IPv6.IsValid():
			rec.IPv6 = ip
		}
	}
	ann := n.Annotations
	if v, ok := ann[AnnotationIPv4]; ok {
		ip, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil || !ip.Is4() {
			return rec, fmt.Errorf("node %s: annotation %s=%q: not an IPv4 address", n.Name, AnnotationIPv4, v)
		}
		rec.IPv4 = ip
	}
	if v, ok := ann[AnnotationIPv6]; ok {
		ip, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return rec, fmt.Errorf("node %s: annotation %s=%q: not an IPv6 address", n.Name, AnnotationIPv6, v)
		}
		rec.IPv6 = ip
	}
	if v, ok := ann[AnnotationASN]; ok {
		asn, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || asn == 0 {
			return rec, fmt.Errorf("node %s: annotation %s=%q: not an ASN (1..4294967295)", n.Name, AnnotationASN, v)
		}
		rec.ASN = uint32(asn)
	}
	return rec, rec.Validate()
}

// List returns the usable nodes the informer holds, sorted by name; the
// others are logged once per change of what is wrong with them.
func (r *Registry) List() []mesh.Node {
	var nodes []mesh.Node
	seen := map[string]bool{}
	for _, obj := range r.nodes.GetStore().List() {
		n, ok := obj.(*corev1.Node)
		if !ok {
			continue
		}
		seen[n.Name] = true
		rec, err := NodeFromObject(n, r.opts.DefaultASN)
		r.noteInvalid(n.Name, err)
		if err == nil {
			nodes = append(nodes, rec)
		}
	}
	r.mu.Lock()
	for name := range r.invalid {
		if !seen[name] {
			delete(r.invalid, name)
		}
	}
	r.mu.Unlock()
	slices.SortFunc(nodes, func(a, b mesh.Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes
}

func (r *Registry) noteInvalid(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.invalid, name)
		return
	}
	if r.invalid[name] != err.Error() {
		r.invalid[name] = err.Error()
		r.log.Warn("node left out of the mesh", "node", name, "err", err)
	}
}

// Register checks that the cluster has a Node object for n and that it makes
// a usable record; it writes nothing. When the record peers see differs from
// n (the agent's own idea of its addresses or ASN), it logs which annotation
// would make them agree.
func (r *Registry) Register(ctx context.Context, n mesh.Node) error {
	obj, err := r.api.Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("register node %s: %w (the kubelet creates it; is NODE_NAME the node's name?)", n.Name, ErrNoNode)
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", n.Name, err)
	}
	rec, err := NodeFromObject(obj, r.opts.DefaultASN)
	if err != nil {
		return fmt.Errorf("register node %s: %w", n.Name, err)
	}
	for _, d := range []struct {
		differ     bool
		annotation string
		want       string
	}{
		{n.IPv4.IsValid() && n.IPv4 != rec.IPv4, AnnotationIPv4, n.IPv4.String()},
		{n.IPv6.IsValid() && n.IPv6 != rec.IPv6, AnnotationIPv6, n.IPv6.String()},
		{n.ASN != 0 && n.ASN != rec.ASN, AnnotationASN, strconv.FormatUint(uint64(n.ASN), 10)},
	} {
		if d.differ {
			r.log.Warn("peers know this node differently from its Node object; annotate the Node to change that",
				"node", n.Name, "annotation", d.annotation, "want", d.want, "record", rec)
		}
	}
	return nil
}

// Watch implements mesh.Registry: it waits until the informer has synced,
// calls fn with every usable node, then again whenever a Node is added,
// changed or deleted in a way that changes the list, until ctx is done.
func (r *Registry) Watch(ctx context.Context, fn func([]mesh.Node)) {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default: // a change is already pending: fn will read the latest list
		}
	}
	reg, err := r.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	if err != nil { // the informer has been stopped
		r.log.Error("watch nodes", "err", err)
		return
	}
	defer func() { _ = r.nodes.RemoveEventHandler(reg) }()
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return
	}
	var last []mesh.Node
	for first := true; ; first = false {
		if nodes := r.List(); first || !slices.Equal(nodes, last) {
			fn(slices.Clone(nodes))
			last = nodes
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
