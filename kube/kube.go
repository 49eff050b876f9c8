// Package kube connects flatnet to a Kubernetes API server: the client
// configuration (in-cluster, or from a kubeconfig file) and the informers
// that the Kubernetes datastore's parts read from — Nodes and Pods for the
// node registry (bgp/mesh/kubemesh) and the garbage collector (ipam/kubegc),
// IPPools and BGPPeers for the agent's pools and explicit peers,
// NetworkPolicies, Namespaces and every Pod for NetworkPolicy enforcement
// (policy/kubepolicy); the IPAM store (ipam/kubestore) watches its own
// objects. The types of flatnet's own
// resources are in kube/v1alpha1.
//
// The package must not hold IPAM or BGP logic, and the agent must not need
// more access than deploy/rbac.yaml grants: it reads Nodes, Pods, IPPools,
// BGPPeers, Namespaces and NetworkPolicies, never writes them, and never
// reads Secrets.
package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flatnet-io/flatnet/kube/v1alpha1"
)

// RESTConfig returns the configuration to reach the API server: from the
// kubeconfig file at path, or, when path is empty, the in-cluster one (the
// pod's ServiceAccount token and the KUBERNETES_SERVICE_* variables).
func RESTConfig(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		where := "in-cluster"
		if path != "" {
			where = path
		}
		return nil, fmt.Errorf("kubernetes client configuration (%s): %w", where, err)
	}
	cfg.UserAgent = "flatnet-agent"
	return cfg, nil
}

// NodeInformer returns an informer on every Node, keeping only what flatnet
// reads (name, labels, annotations, addresses); the caller runs it.
func NodeInformer(core corev1client.CoreV1Interface) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(core.RESTClient(), "nodes", metav1.NamespaceAll, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &corev1.Node{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) { // fails only once started
		if n, ok := obj.(*corev1.Node); ok {
			return &corev1.Node{
				ObjectMeta: slimMeta(n.ObjectMeta),
				Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
			}, nil
		}
		return obj, nil
	})
	return inf
}

// PodInformer returns an informer on the Pods bound to node (all namespaces),
// keyed by namespace/name, keeping only what flatnet reads (node, phase,
// addresses); the caller runs it.
func PodInformer(core corev1client.CoreV1Interface, node string) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(core.RESTClient(), "pods", metav1.NamespaceAll, fields.OneTermEqualSelector("spec.nodeName", node))
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return &corev1.Pod{
				ObjectMeta: slimMeta(p.ObjectMeta),
				Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName},
				Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIPs: p.Status.PodIPs},
			}, nil
		}
		return obj, nil
	})
	return inf
}

// ListIPPools returns every IPPool, sorted by name. client speaks
// flatnet.io/v1alpha1 (v1alpha1.NewRESTClient).
func ListIPPools(ctx context.Context, client rest.Interface) ([]v1alpha1.IPPool, error) {
	var list v1alpha1.IPPoolList
	if err := client.Get().Resource(v1alpha1.IPPools).Do(ctx).Into(&list); err != nil {
		return nil, fmt.Errorf("list %s.%s (are the CRDs installed, and may this identity list them?): %w", v1alpha1.IPPools, v1alpha1.Group, err)
	}
	slices.SortFunc(list.Items, func(a, b v1alpha1.IPPool) int { return strings.Compare(a.Name, b.Name) })
	return list.Items, nil
}

// IPPoolInformer returns an informer on every IPPool; client speaks
// flatnet.io/v1alpha1. The caller runs it.
func IPPoolInformer(client rest.Interface) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(client, v1alpha1.IPPools, metav1.NamespaceAll, fields.Everything())
	return cache.NewSharedIndexInformer(lw, &v1alpha1.IPPool{}, 0, cache.Indexers{})
}

// BGPPeerInformer returns an informer on every BGPPeer; client speaks
// flatnet.io/v1alpha1. The caller runs it.
func BGPPeerInformer(client rest.Interface) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(client, v1alpha1.BGPPeers, metav1.NamespaceAll, fields.Everything())
	return cache.NewSharedIndexInformer(lw, &v1alpha1.BGPPeer{}, 0, cache.Indexers{})
}

// CheckList makes one small list request of resource, one of flatnet.io's
// (v1alpha1.BGPPeers), so that a missing CRD or permission is an error at
// once rather than an informer retrying in the background.
func CheckList(ctx context.Context, client rest.Interface, resource string) error {
	if err := client.Get().Resource(resource).Param("limit", "1").Do(ctx).Error(); err != nil {
		return fmt.Errorf("list %s.%s (are the CRDs installed, and may this identity list them?): %w", resource, v1alpha1.Group, err)
	}
	return nil
}

// slimMeta keeps the metadata an informer's key and flatnet need.
func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, Annotations: m.Annotations, DeletionTimestamp: m.DeletionTimestamp,
	}
}
