package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/flatnet-io/flatnet/bgp/kubepeers"
	"github.com/flatnet-io/flatnet/bgp/mesh"
	"github.com/flatnet-io/flatnet/bgp/mesh/kubemesh"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/filestore"
	"github.com/flatnet-io/flatnet/ipam/kubegc"
	"github.com/flatnet-io/flatnet/ipam/kubestore"
	"github.com/flatnet-io/flatnet/kube"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// datastore is where the node's shared state lives: IPAM blocks, the node
// registry of the BGP mesh and, with Kubernetes, pools and explicit peers
// besides the config file's.
type datastore struct {
	store    ipam.Store
	registry mesh.Registry
	// pools are the IPPool objects as read at start, by name.
	pools []v1alpha1.IPPool
	// peers follows the BGPPeer objects; nil when there are none to follow
	// (files, or BGP off).
	peers *kubepeers.Watcher
	// start runs, as tasks, what the datastore does in the background once
	// the allocator exists (the Kubernetes GC); nil when nothing.
	start func(ctx context.Context, tasks *errgroup.Group, alloc *ipam.Allocator)
	// close closes the store; the datastore's tasks must have ended.
	close func()
}

// openDatastore opens the configured datastore. With Kubernetes it returns
// once the blocks, IPPools, Node objects (and BGPPeers, with BGP) have been
// listed; the informers run as tasks until ctx is done, also when it fails.
func openDatastore(ctx context.Context, tasks *errgroup.Group, cfg config.Config, log *slog.Logger) (*datastore, error) {
	switch cfg.Datastore.Type {
	case "file":
		st, err := filestore.Open(cfg.Datastore.File.Dir, filestore.Options{SkipFsync: !cfg.Datastore.File.Fsync, Logger: log.With("component", "filestore")})
		if err != nil {
			return nil, err
		}
		reg, err := mesh.NewFileRegistry(filepath.Join(cfg.Datastore.File.Dir, "nodes"), 0, log.With("component", "registry"))
		if err != nil {
			st.Close()
			return nil, err
		}
		return &datastore{store: st, registry: reg, close: func() { st.Close() }}, nil
	case "kubernetes":
		return openKube(ctx, tasks, cfg, log)
	}
	return nil, fmt.Errorf("datastore.type %q: unknown", cfg.Datastore.Type)
}

var klogOnce sync.Once

func openKube(ctx context.Context, tasks *errgroup.Group, cfg config.Config, log *slog.Logger) (*datastore, error) {
	// client-go logs through klog, whose logger is process-wide: the first
	// agent of the process sets it (tests run several, one after another,
	// and the informers of one may still be stopping when the next starts).
	klogOnce.Do(func() { klog.SetSlogLogger(log.With("component", "client-go")) })
	rc, err := kube.RESTConfig(cfg.Datastore.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	core, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	flatnet, err := v1alpha1.NewRESTClient(rc)
	if err != nil {
		return nil, err
	}
	// The pools are read once: the allocator's are fixed for its lifetime.
	pools, err := kube.ListIPPools(ctx, flatnet)
	if err != nil {
		return nil, err
	}
	if cfg.BGP.Enabled {
		if err := kube.CheckList(ctx, flatnet, v1alpha1.BGPPeers); err != nil {
			return nil, err
		}
	}
	st, err := kubestore.New(ctx, rc, kubestore.Options{Logger: log.With("component", "kubestore")})
	if err != nil {
		return nil, err
	}
	// The informers live as long as the agent: ctx is Run's.
	runInformer := func(i cache.SharedIndexInformer) { tasks.Go(func() error { i.Run(ctx.Done()); return nil }) }
	nodes, pods, ippools := kube.NodeInformer(core), kube.PodInformer(core, cfg.NodeName), kube.IPPoolInformer(flatnet)
	if err := warnPoolChanges(ippools, pools, log); err != nil {
		st.Close()
		return nil, err
	}
	synced := []cache.InformerSynced{nodes.HasSynced, pods.HasSynced}
	var peers *kubepeers.Watcher
	if cfg.BGP.Enabled {
		peers = kubepeers.NewWatcher(kube.BGPPeerInformer(flatnet), nodes, cfg.NodeName, cfg.Datastore.Kubernetes.BGPPasswordsDir, log.With("component", "bgppeers"))
		runInformer(peers.Objects())
		synced = append(synced, peers.Objects().HasSynced)
	}
	runInformer(nodes)
	runInformer(pods)
	runInformer(ippools)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		st.Close()
		return nil, fmt.Errorf("kubernetes: informers did not sync: %w", context.Cause(ctx))
	}
	reg, err := kubemesh.New(nodes, core, kubemesh.Options{DefaultASN: cfg.BGP.ASN, Logger: log.With("component", "registry")})
	if err != nil {
		st.Close()
		return nil, err
	}
	d := &datastore{store: st, registry: reg, pools: pools, peers: peers, close: st.Close}
	d.start = func(ctx context.Context, tasks *errgroup.Group, alloc *ipam.Allocator) {
		gc, err := kubegc.New(st, alloc, kubegc.FromInformers(pods, nodes, core), kubegc.Config{
			Grace: cfg.Datastore.Kubernetes.GCGrace, Interval: cfg.Datastore.Kubernetes.GCInterval, Logger: log.With("component", "gc"),
		})
		if err != nil {
			log.Error("garbage collector not started", "err", err)
			return
		}
		tasks.Go(func() error { gc.Run(ctx); return nil })
	}
	return d, nil
}
