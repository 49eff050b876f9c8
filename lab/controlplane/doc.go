// Package controlplane runs the core of a Kubernetes control plane for the
// lab and the tests — Debian's etcd and a kube-apiserver built by
// `make kube-bins` — with a PKI of its own (a CA, the serving certificate,
// the ServiceAccount signing key), static token authentication and RBAC, and
// reaches it: kubeconfigs, REST configurations, kubectl (apply, wait,
// tokens).
//
// A Server runs in this process's network namespace on ports the kernel
// picked, or in a namespace of its own on the standard ports. It starts no
// controller manager, scheduler or kubelet, but leaves room for them: the
// CA's and the ServiceAccount key's files, more static tokens, more API
// server flags. It must never touch processes or files other than its own.
package controlplane
