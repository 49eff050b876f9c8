// Package kubepeers works out a node's explicit BGP peers from the BGPPeer
// objects (flatnet.io/v1alpha1): which objects apply to the node (its name or
// labels), their passwords from the mounted Secret flatnet-bgp-passwords, and
// each peer checked by the bgp package's rules beside the configuration
// file's peers. Watcher follows the objects and the node's labels.
//
// It is the Kubernetes side of package bgp, as bgp/mesh/kubemesh is of the
// mesh. It must not speak BGP, nor write any object.
package kubepeers

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// Peers returns node's explicit peers: conf, the config file's
// (valid already), then the peer of each BGPPeer object in objs that applies
// to node, in name order. An object whose selector or peer is malformed, or
// whose peer is not valid beside those before it (c's rules, and names and
// addresses unique), is left out; dropped says why, by object name.
func Peers(c bgp.Config, conf []bgp.Peer, objs []*v1alpha1.BGPPeer, node string, labels map[string]string,
	secret func(key string) (string, error),
) (peers []bgp.Peer, dropped map[string]error) {
	peers, dropped = slices.Clone(conf), map[string]error{}
	objs = slices.SortedFunc(slices.Values(objs), func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	for _, o := range objs {
		p, applies, err := objectPeer(c, peers, o, node, labels, secret)
		switch {
		case err != nil:
			dropped[o.Name] = err
		case applies:
			peers = append(peers, p)
		}
	}
	return peers, dropped
}

// objectPeer returns o's peer, if o applies to node, checked beside the
// peers before it.
func objectPeer(c bgp.Config, before []bgp.Peer, o *v1alpha1.BGPPeer, node string, labels map[string]string,
	secret func(key string) (string, error),
) (p bgp.Peer, applies bool, err error) {
	if applies, err = o.AppliesTo(node, labels); err != nil || !applies {
		return p, applies, err
	}
	if p, err = o.Peer(secret); err != nil {
		return p, true, err
	}
	if i := slices.IndexFunc(before, func(q bgp.Peer) bool { return q.Address == p.Address }); i >= 0 {
		return p, true, fmt.Errorf("bgppeer %s: address %v is already peer %s's", o.Name, p.Address, before[i].Name)
	}
	if err := bgp.ValidatePeers(c, append(slices.Clip(before), p)); err != nil {
		return p, true, fmt.Errorf("bgppeer %s: %w", o.Name, err)
	}
	return p, true, nil
}

// SecretFile returns a reader of the keys of a Secret mounted at dir: a key's
// value is its file's content, less one trailing newline.
func SecretFile(dir string) func(key string) (string, error) {
	return func(key string) (string, error) {
		// A Secret's keys are file names; anything else ("..", "a/b") would
		// read outside the Secret.
		if errs := validation.IsConfigMapKey(key); len(errs) > 0 {
			return "", fmt.Errorf("not a Secret key: %s", strings.Join(errs, "; "))
		}
		path := filepath.Join(dir, key)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no file %s: is it a key of the Secret flatnet-bgp-passwords?", path)
		}
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(string(b), "\n"), nil
	}
}
