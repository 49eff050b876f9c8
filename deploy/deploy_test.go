package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The built DaemonSet says what the issue asks of it: host network, a node
// name from the downward API, every node tolerated, the probes on loopback,
// the CNI files installed into the host's directories, and the ConfigMaps
// generated from the files in this directory, unchanged.
func TestBuiltManifests(t *testing.T) {
	objs := build(t)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.Kind)
	}
	if i := slices.Index(kinds, "CustomResourceDefinition"); i != 0 {
		t.Errorf("kinds in order %v: the CRDs must come first", kinds)
	}

	var ds appsv1.DaemonSet
	find(t, objs, "DaemonSet", "flatnet", &ds)
	spec := ds.Spec.Template.Spec
	if ds.Namespace != "kube-system" || !spec.HostNetwork || spec.ServiceAccountName != "flatnet" {
		t.Errorf("DaemonSet %s/%s: hostNetwork %v, serviceAccount %q", ds.Namespace, ds.Name, spec.HostNetwork, spec.ServiceAccountName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("tolerations %+v do not tolerate every taint", spec.Tolerations)
	}
	agent := spec.Containers[0]
	if agent.SecurityContext == nil || agent.SecurityContext.Privileged == nil || !*agent.SecurityContext.Privileged {
		t.Error("the agent container is not privileged")
	}
	if !slices.ContainsFunc(agent.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Error("NODE_NAME does not come from spec.nodeName")
	}
	for probe, path := range map[*corev1.Probe]string{agent.LivenessProbe: "/healthz", agent.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Host != "127.0.0.1" || probe.HTTPGet.Path != path {
			t.Errorf("probe for %s: %+v, want an HTTP GET of 127.0.0.1%s", path, probe, path)
		}
	}
	// The scrape annotations name the port the probes use: health.address.
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" || ann["prometheus.io/port"] != agent.LivenessProbe.HTTPGet.Port.String() {
		t.Errorf("pod template annotations %v: want prometheus.io/scrape, /path /metrics and /port of the probes (%s)", ann, agent.LivenessProbe.HTTPGet.Port.String())
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want install-cni", len(spec.InitContainers))
	}
	mounted := map[string]string{}
	for _, m := range spec.InitContainers[0].VolumeMounts {
		mounted[hostPaths[m.Name]] = m.MountPath
	}
	for _, host := range []string{"/opt/cni/bin", "/etc/cni/net.d"} {
		if mounted[host] == "" {
			t.Errorf("install-cni does not mount the host's %s (mounts %v)", host, mounted)
		}
	}

	for name, file := range map[string]string{"flatnet-cni": "cni/10-flatnet.conflist", "flatnet-config": "agent/flatnet.yaml"} {
		var cm corev1.ConfigMap
		find(t, objs, "ConfigMap", name+"-", &cm)
		want, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if got := cm.Data[filepath.Base(file)]; got != string(want) {
			t.Errorf("ConfigMap %s does not carry %s unchanged", cm.Name, file)
		}
		if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == cm.Name }) {
			t.Errorf("the DaemonSet does not mount ConfigMap %s", cm.Name)
		}
	}
}

// The cluster's agent configuration is the reference file with the kubernetes
// datastore: every key of the reference (but the file datastore's) must be in
// it, so a key added there is not forgotten here.
func TestAgentConfigFollowsReference(t *testing.T) {
	ref, cluster := keys(t, "config/flatnet.yaml"), keys(t, "agent/flatnet.yaml")
	for k := range ref {
		if !strings.HasPrefix(k, "datastore.file") && !cluster[k] {
			t.Errorf("agent/flatnet.yaml lacks %s, which config/flatnet.yaml has", k)
		}
	}
	var c struct {
		Datastore struct {
			Type string `json:"type"`
		} `json:"datastore"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, "agent", "flatnet.yaml"))
	if err := yaml.Unmarshal(data, &c); err != nil || c.Datastore.Type != "kubernetes" {
		t.Errorf("agent/flatnet.yaml: datastore.type %q (%v), want kubernetes", c.Datastore.Type, err)
	}
}

// keys returns the dotted paths of every mapping key in a YAML file.
func keys(t *testing.T, file string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	out := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				walk(strings.TrimPrefix(prefix+"."+k, "."), sub)
			}
		case []any:
			for _, sub := range v {
				walk(prefix+"[]", sub)
			}
		default:
			out[prefix] = true
		}
	}
	walk("", doc)
	return out
}

// Everything in deploy/ is accepted by a real API server: the CRDs applied
// for real, then the whole kustomization as a server-side dry run (which
// runs admission and the schemas, and the privilege checks).
func TestApplyDryRun(t *testing.T) {
	k := server.Get(t)
	k.ApplyCRDs(t)
	out := k.MustKubectl(t, "apply", "--dry-run=server", "-k", dir)
	for _, want := range []string{"daemonset.apps/flatnet", "clusterrole.rbac.authorization.k8s.io/flatnet", "serviceaccount/flatnet"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %s:\n%s", want, out)
		}
	}
}
