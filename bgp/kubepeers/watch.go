package kubepeers

import (
	"context"
	"log/slog"
	"maps"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// Watcher follows the BGPPeer objects, and this node's labels that say
// which of them apply here.
type Watcher struct {
	objects cache.SharedIndexInformer // BGPPeers
	nodes   cache.SharedIndexInformer // Nodes (kube.NodeInformer)
	node    string
	secret  func(key string) (string, error) // reads the mounted Secret flatnet-bgp-passwords
	// resync is how often the peers are worked out without a change to the
	// objects: the kubelet updates the Secret's files behind our back.
	resync time.Duration
	log    *slog.Logger
}

// NewWatcher returns a watcher of node's explicit peers: objects is a
// BGPPeer informer (kube.BGPPeerInformer), nodes a Node informer
// (kube.NodeInformer), passwordsDir where the Secret flatnet-bgp-passwords
// is mounted. The informers are the caller's to run.
func NewWatcher(objects, nodes cache.SharedIndexInformer, node, passwordsDir string, log *slog.Logger) *Watcher {
	return &Watcher{objects: objects, nodes: nodes, node: node, secret: SecretFile(passwordsDir), resync: time.Minute, log: log}
}

// Objects is the BGPPeer informer.
func (k *Watcher) Objects() cache.SharedIndexInformer { return k.objects }

// Watch calls fn with the node's explicit peers, conf (the config file's)
// and then the objects' (see Peers): once at once, then whenever they
// change, until ctx is done. Calls are sequential. An object left out is
// logged once per change of why.
func (k *Watcher) Watch(ctx context.Context, c bgp.Config, conf []bgp.Peer, fn func([]bgp.Peer)) {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default: // a change is already pending: the next round reads the latest
		}
	}
	objReg, err := k.objects.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	if err != nil { // the informer has been stopped
		k.log.Error("watch bgppeers", "err", err)
		return
	}
	defer func() { _ = k.objects.RemoveEventHandler(objReg) }()
	// Only this node's labels matter, and Nodes change often (status).
	nodeReg, err := k.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(old, cur any) {
			before, ok1 := old.(*corev1.Node)
			after, ok2 := cur.(*corev1.Node)
			if !ok1 || !ok2 || after.Name == k.node && !maps.Equal(before.Labels, after.Labels) {
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	})
	if err != nil {
		k.log.Error("watch nodes", "err", err)
		return
	}
	defer func() { _ = k.nodes.RemoveEventHandler(nodeReg) }()
	if !cache.WaitForCacheSync(ctx.Done(), objReg.HasSynced, nodeReg.HasSynced) {
		return
	}

	t := time.NewTicker(k.resync)
	defer t.Stop()
	var logged map[string]string // object → why it is left out, as last logged
	var last []bgp.Peer
	for first := true; ; first = false {
		peers, dropped := Peers(c, conf, k.list(), k.node, k.labels(), k.secret)
		now := map[string]string{}
		for name, err := range dropped {
			if now[name] = err.Error(); logged[name] != now[name] {
				k.log.Error("bgp peer object left out", "bgppeer", name, "err", err)
			}
		}
		logged = now
		if first || !reflect.DeepEqual(peers, last) {
			fn(peers)
			last = peers
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// list returns the BGPPeer objects the informer holds.
func (k *Watcher) list() []*v1alpha1.BGPPeer {
	var objs []*v1alpha1.BGPPeer
	for _, obj := range k.objects.GetStore().List() {
		if p, ok := obj.(*v1alpha1.BGPPeer); ok {
			objs = append(objs, p)
		}
	}
	return objs
}

// labels returns this node's labels; none when its Node object is gone.
func (k *Watcher) labels() map[string]string {
	obj, ok, err := k.nodes.GetStore().GetByKey(k.node)
	if n, isNode := obj.(*corev1.Node); ok && err == nil && isNode {
		return n.Labels
	}
	return nil
}
