package kubegc

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
)

// FromInformers returns lookups backed by a Pod informer of this node's pods
// and a Node informer (kube.PodInformer, kube.NodeInformer; the caller runs
// them), with core for the live checks. A pod the informer does not hold
// because it runs on another node reads as missing here, and the live check
// then finds it elsewhere: Holds says it is not this node's.
func FromInformers(pods, nodes cache.SharedIndexInformer, core corev1client.CoreV1Interface) Lookups {
	return Lookups{
		CachedPod: func(_ context.Context, namespace, name string) (*corev1.Pod, error) {
			obj, ok, err := pods.GetIndexer().GetByKey(namespace + "/" + name)
			if err != nil || !ok {
				return nil, err
			}
			pod, _ := obj.(*corev1.Pod)
			return pod, nil
		},
		LivePod: func(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
			pod, err := core.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return pod, err
		},
		CachedNode: func(_ context.Context, name string) (bool, error) {
			_, ok, err := nodes.GetIndexer().GetByKey(name)
			return ok, err
		},
		LiveNode: func(ctx context.Context, name string) (bool, error) {
			_, err := core.Nodes().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return err == nil, err
		},
	}
}
