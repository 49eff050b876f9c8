package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Cluster DNS for real nodes: upstream CoreDNS (make image builds it, image
// lab-coredns) as the kube-dns Service at ClusterDNS, serving cluster.local
// and the reverse zones only — there is no upstream resolver here, and a
// catch-all zone without one answers SERVFAIL for everything.

// ClusterDNS is the kube-dns Service's address the kubelets give pods.
var ClusterDNS = netip.MustParseAddr("10.96.0.10")

const coreDNSImage = "ghcr.io/flatnet-io/lab-coredns:v1.15.0"

// coreDNSManifest is CoreDNS with the RBAC its kubernetes plugin needs.
func coreDNSManifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "lab:coredns"}
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "lab:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "lab:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
        }
        cache 30
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      containers:
        - name: coredns
          image: %s
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
          livenessProbe: {httpGet: {path: /health, port: 8080}}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: %s
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
`, coreDNSImage, ClusterDNS)
}

// deployDNS runs CoreDNS and waits until it is ready.
func (l *Lab) deployDNS() error {
	if err := l.kube.Apply([]byte(coreDNSManifest())); err != nil {
		return err
	}
	if _, err := l.kube.Kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", fmt.Sprintf("--timeout=%s", rolloutTimeout)); err != nil {
		return fmt.Errorf("cluster DNS (CoreDNS) not ready: %w", err)
	}
	return nil
}

// lookup resolves name through the cluster DNS from inside a network
// namespace (a pod's), as the pod's resolver would.
func lookup(netnsPath, name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			var err error
			conn, err = (&net.Dialer{}).DialContext(ctx, network, netip.AddrPortFrom(ClusterDNS, 53).String())
			return err
		})
		return conn, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return r.LookupNetIP(ctx, "ip4", name)
}
