// Package deploy holds flatnet's Kubernetes manifests — kustomization.yaml,
// the CRDs (crds/), RBAC (rbac.yaml), the DaemonSet (daemonset.yaml), the
// agent's configuration on a cluster (agent/flatnet.yaml) and the image
// (image/Dockerfile) — and the tests that apply them to a real API server.
// Its only Go code hands the CRDs and RBAC to the lab (package lab), which
// installs them into its own API server.
package deploy

import "embed"

// Cluster holds crds/*.yaml and rbac.yaml: what a cluster needs before the
// agents start.
//
//go:embed crds/*.yaml rbac.yaml
var Cluster embed.FS

// Kustomization is the whole kustomization (kustomization.yaml and every file
// it names): what `kubectl apply --server-side -k` takes, for the lab's real
// nodes, which apply it unchanged.
//
//go:embed kustomization.yaml crds/*.yaml rbac.yaml daemonset.yaml agent/flatnet.yaml cni/10-flatnet.conflist
var Kustomization embed.FS
