// Package kubestore is the ipam.Store of the Kubernetes datastore: one
// IPAMBlock object (flatnet.io/v1alpha1, cluster-scoped) per claimed block,
// named after its CIDR, so that the API server — and etcd behind it — is the
// only shared state.
//
// Every write is a compare-and-swap on the object's resourceVersion, which is
// the block's Revision: Create fails with AlreadyExists (ipam.ErrExists),
// Update and Delete carry the version read and fail with Conflict
// (ipam.ErrConflict) or NotFound (ipam.ErrNotFound). resourceVersions never
// repeat, so a block deleted and claimed again cannot be overwritten from an
// old copy.
//
// ListBlocks is served from memory: a list and watch of the IPAMBlocks,
// merged with what this process's own writes returned, so the allocator's
// common case — read, then write one block — costs one API request. GetBlock
// asks the server. A write that loses a race refreshes the block it lost on
// before it returns, so the allocator's retry reads the winner's version.
//
// The package must not hold allocation logic (that is ipam's) nor know about
// pods or nodes (ipam/kubegc, bgp/mesh/kubemesh).
package kubestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// Options tune a Store.
type Options struct {
	Logger *slog.Logger // nil: discard
}

// Client-side rate limit when the caller's rest.Config sets none (client-go
// would allow 5 requests a second): every pod start and stop costs a write.
const (
	DefaultQPS   = 100
	DefaultBurst = 200
)

// Store keeps blocks as IPAMBlock objects.
type Store struct {
	client rest.Interface
	log    *slog.Logger
	view   *view
	cancel context.CancelFunc
	done   chan struct{}
}

var _ ipam.Store = (*Store)(nil)

// New connects to the API server cfg names, starts the list and watch of
// IPAMBlocks and waits, within ctx, until the first list has arrived. The
// watch runs until Close. cfg is not changed; a zero QPS there gets
// DefaultQPS and DefaultBurst.
func New(ctx context.Context, cfg *rest.Config, opts Options) (*Store, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = DefaultQPS, DefaultBurst
	}
	client, err := v1alpha1.NewRESTClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("open kubernetes store: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// One plain request first, so that a missing CRD or permission is an
	// error here rather than a reflector retrying in the background.
	if err := client.Get().Resource(v1alpha1.IPAMBlocks).Param("limit", "1").Do(ctx).Error(); err != nil {
		return nil, fmt.Errorf("open kubernetes store: list %s.%s (are the CRDs installed, and may this identity list them?): %w", v1alpha1.IPAMBlocks, v1alpha1.Group, err)
	}
	s := &Store{client: client, log: log, view: newView(), done: make(chan struct{})}
	// The reflector logs through the context's logger: ours.
	runCtx, cancel := context.WithCancel(klog.NewContext(context.Background(), logr.FromSlogHandler(log.Handler())))
	s.cancel = cancel
	r := cache.NewReflectorWithOptions(listWatch(client), &v1alpha1.IPAMBlock{}, s.view, cache.ReflectorOptions{Name: "flatnet ipamblocks"})
	go func() {
		defer close(s.done)
		r.RunWithContext(runCtx)
	}()
	select {
	case <-s.view.synced:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("open kubernetes store: wait for the first list of blocks: %w", ctx.Err())
	}
}

// listWatch lists and watches every IPAMBlock.
func listWatch(client rest.Interface) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return client.Get().Resource(v1alpha1.IPAMBlocks).VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Get()
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			w, err := client.Get().Resource(v1alpha1.IPAMBlocks).VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
			if err != nil && ctx.Err() != nil {
				// Stopping, not failing: the reflector would log it as an error.
				return watch.NewEmptyWatch(), nil //nolint:nilerr // deliberate, see above
			}
			return w, err
		},
	}
}

// Close stops the watch.
func (s *Store) Close() {
	s.cancel()
	<-s.done
}

// ListBlocks implements ipam.Store, from memory.
func (s *Store) ListBlocks(ctx context.Context) ([]ipam.Block, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	blocks, err := s.view.list()
	if err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	return blocks, nil
}

// GetBlock returns the block claimed at cidr, or ipam.ErrNotFound, as the
// API server has it (storetest.Store; and refresh after a lost race).
func (s *Store) GetBlock(ctx context.Context, cidr netip.Prefix) (ipam.Block, error) {
	name := ObjectName(cidr)
	obj := &v1alpha1.IPAMBlock{}
	err := s.client.Get().Resource(v1alpha1.IPAMBlocks).Name(name).Do(ctx).Into(obj)
	if err != nil {
		if isGone(err, name) {
			err = ipam.ErrNotFound
		}
		return ipam.Block{}, wrap("get", cidr, err)
	}
	s.view.observe(obj)
	b, err := fromObject(obj)
	return b, wrap("get", cidr, err)
}

// CreateBlock implements ipam.Store.
func (s *Store) CreateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	obj := toObject(b)
	obj.ResourceVersion = ""
	out := &v1alpha1.IPAMBlock{}
	err := s.client.Post().Resource(v1alpha1.IPAMBlocks).Body(obj).Do(ctx).Into(out)
	if apierrors.IsAlreadyExists(err) {
		s.refresh(ctx, b.CIDR)
		return ipam.Block{}, wrap("create", b.CIDR, ipam.ErrExists)
	}
	return s.stored("create", b.CIDR, out, err)
}

// UpdateBlock implements ipam.Store.
func (s *Store) UpdateBlock(ctx context.Context, b ipam.Block) (ipam.Block, error) {
	if b.Revision == "" { // the server would take it as an unconditional write
		return ipam.Block{}, wrap("update", b.CIDR, fmt.Errorf("%w: no revision", ipam.ErrConflict))
	}
	obj := toObject(b)
	out := &v1alpha1.IPAMBlock{}
	err := s.client.Put().Resource(v1alpha1.IPAMBlocks).Name(obj.Name).Body(obj).Do(ctx).Into(out)
	switch {
	case apierrors.IsConflict(err):
		s.refresh(ctx, b.CIDR)
		return ipam.Block{}, wrap("update", b.CIDR, fmt.Errorf("%w: %w", ipam.ErrConflict, err))
	case isGone(err, obj.Name):
		s.view.forget(b.CIDR, version(b.Revision), false)
		return ipam.Block{}, wrap("update", b.CIDR, ipam.ErrNotFound)
	}
	return s.stored("update", b.CIDR, out, err)
}

// DeleteBlock implements ipam.Store.
func (s *Store) DeleteBlock(ctx context.Context, b ipam.Block) error {
	if b.Revision == "" {
		return wrap("delete", b.CIDR, fmt.Errorf("%w: no revision", ipam.ErrConflict))
	}
	name := ObjectName(b.CIDR)
	// Encoded by hand: the client's codec would label DeleteOptions with
	// flatnet.io/v1alpha1, where the server does not look for it.
	opts, err := json.Marshal(metav1.DeleteOptions{
		TypeMeta:      metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "DeleteOptions"},
		Preconditions: &metav1.Preconditions{ResourceVersion: &b.Revision},
	})
	if err != nil {
		return wrap("delete", b.CIDR, err)
	}
	err = s.client.Delete().Resource(v1alpha1.IPAMBlocks).Name(name).Body(opts).Do(ctx).Error()
	switch {
	case err == nil:
		s.view.forget(b.CIDR, version(b.Revision), true)
		return nil
	case apierrors.IsConflict(err):
		s.refresh(ctx, b.CIDR)
		return wrap("delete", b.CIDR, fmt.Errorf("%w: %w", ipam.ErrConflict, err))
	case isGone(err, name):
		s.view.forget(b.CIDR, version(b.Revision), false)
		return wrap("delete", b.CIDR, ipam.ErrNotFound)
	}
	return wrap("delete", b.CIDR, err)
}

// stored takes the object a write returned into the view and returns its block.
func (s *Store) stored(op string, cidr netip.Prefix, out *v1alpha1.IPAMBlock, err error) (ipam.Block, error) {
	if err != nil {
		return ipam.Block{}, wrap(op, cidr, err)
	}
	s.view.observe(out)
	b, err := fromObject(out)
	return b, wrap(op, cidr, err)
}

// refresh reads a block another writer changed, so that the view — and the
// allocator's next attempt — has its current version without waiting for the
// watch. It costs one request per lost race; failing, it only leaves the
// view to the watch.
func (s *Store) refresh(ctx context.Context, cidr netip.Prefix) {
	if _, err := s.GetBlock(ctx, cidr); err != nil && !errors.Is(err, ipam.ErrNotFound) {
		s.log.Debug("refresh block after a lost race", "block", cidr, "err", err)
	}
}

// isGone tells a missing object (named name) from a missing resource type: a
// server without the CRD answers 404 too, and that must not read as "this
// block is not claimed".
func isGone(err error, name string) bool {
	var st apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &st) {
		return false
	}
	d := st.Status().Details
	return d != nil && d.Name == name
}

func wrap(op string, cidr netip.Prefix, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s block %s: %w", op, cidr, err)
}
