// Package kube holds end-to-end tests of flatnet-agent processes on the
// Kubernetes datastore: the built agent binary, several at once, each its own
// node, against a real kube-apiserver and etcd (test/harness), under the
// ServiceAccount and ClusterRole of deploy/. The package holds tests only.
package kube
