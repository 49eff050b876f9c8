package kube

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// The informers NetworkPolicy enforcement reads (package policy): every
// NetworkPolicy, every Namespace (labels), and every Pod of every node
// (labels, named ports, addresses), each slimmed to what policy reads.

// NetworkPolicyInformer returns an informer on every NetworkPolicy; the
// caller runs it.
func NetworkPolicyInformer(client networkingv1client.NetworkingV1Interface) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(client.RESTClient(), "networkpolicies", metav1.NamespaceAll, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &networkingv1.NetworkPolicy{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if p, ok := obj.(*networkingv1.NetworkPolicy); ok {
			return &networkingv1.NetworkPolicy{ObjectMeta: slimMeta(p.ObjectMeta), Spec: p.Spec}, nil
		}
		return obj, nil
	})
	return inf
}

// NamespaceInformer returns an informer on every Namespace, keeping its
// name and labels; the caller runs it.
func NamespaceInformer(core corev1client.CoreV1Interface) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(core.RESTClient(), "namespaces", metav1.NamespaceAll, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &corev1.Namespace{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if n, ok := obj.(*corev1.Namespace); ok {
			m := slimMeta(n.ObjectMeta)
			m.Annotations = nil
			return &corev1.Namespace{ObjectMeta: m}, nil
		}
		return obj, nil
	})
	return inf
}

// AllPodsInformer returns an informer on the Pods of every node, keeping
// what policy reads: labels, node, hostNetwork, the containers' ports,
// phase and addresses. The caller runs it.
func AllPodsInformer(core corev1client.CoreV1Interface) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(core.RESTClient(), "pods", metav1.NamespaceAll, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		m := slimMeta(p.ObjectMeta)
		m.Annotations = nil
		slim := &corev1.Pod{
			ObjectMeta: m,
			Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
			Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
		}
		for _, c := range p.Spec.Containers {
			var ports []corev1.ContainerPort
			for _, cp := range c.Ports {
				if cp.Name != "" {
					ports = append(ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol})
				}
			}
			slim.Spec.Containers = append(slim.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
		}
		return slim, nil
	})
	return inf
}
