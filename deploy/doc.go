// Package deploy holds flatnet's Kubernetes manifests — kustomization.yaml,
// the CRDs (crds/), RBAC (rbac.yaml), the DaemonSet (daemonset.yaml), the
// agent's configuration on a cluster (agent/flatnet.yaml) and the image
// (image/Dockerfile) — and the tests that apply them to a real API server.
// It has no Go code but its tests, and nothing imports it.
package deploy
