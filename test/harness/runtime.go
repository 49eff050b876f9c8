package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/flatnet-io/flatnet/lab/cniruntime"
	"github.com/flatnet-io/flatnet/lab/netns"
)

// ReferencePlugins is where Debian's containernetworking-plugins live.
const ReferencePlugins = cniruntime.ReferencePlugins

// Runtime calls CNI plugins through libcni from inside a node's namespace, as
// containerd or CRI-O would on that node.
type Runtime struct {
	*cniruntime.Runtime
	Node *NetNS
}

// NewRuntime loads a network configuration list (JSON) with the built
// flatnet plugin and the reference plugins on the plugin path and a result
// cache of the test's own.
func NewRuntime(t testing.TB, node *NetNS, conflist string) *Runtime {
	t.Helper()
	rt, err := cniruntime.New(node.Path(), []byte(conflist), []string{filepath.Join(Root(), "bin"), ReferencePlugins}, filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	return &Runtime{Runtime: rt, Node: node}
}

// Pod is a pod sandbox: a network namespace and a container ID.
type Pod struct {
	*NetNS
	ID     string
	IfName string
	Labels [][2]string // CNI_ARGS
	Caps   map[string]any
}

// NewPod makes a pod namespace with a fresh 64-hex-digit container ID.
func NewPod(t testing.TB, name string) *Pod {
	t.Helper()
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	return &Pod{
		NetNS:  NewNetNS(t, name),
		ID:     hex.EncodeToString(id),
		IfName: "eth0",
		Labels: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}},
	}
}

// RuntimeConf is what the runtime passes for the pod.
func (p *Pod) RuntimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    p.ID,
		NetNS:          netns.Path(p.Name),
		IfName:         p.IfName,
		Args:           p.Labels,
		CapabilityArgs: p.Caps,
	}
}

// Add attaches the pod and returns the result in the current CNI version.
func (r *Runtime) Add(p *Pod) (*current.Result, error) { return r.AddConf(p.RuntimeConf()) }

// AddConf attaches with a runtime configuration as given.
func (r *Runtime) AddConf(rt *libcni.RuntimeConf) (*current.Result, error) {
	return r.Runtime.Add(context.Background(), rt)
}

// Del detaches the pod.
func (r *Runtime) Del(p *Pod) error { return r.DelConf(p.RuntimeConf()) }

// DelConf detaches with a runtime configuration as given.
func (r *Runtime) DelConf(rt *libcni.RuntimeConf) error {
	return r.Runtime.Del(context.Background(), rt)
}

// Check verifies the pod's attachment against the cached result.
func (r *Runtime) Check(p *Pod) error { return r.CheckList(r.List, p) }

// CheckList runs CHECK with another list of the same network name (the cached
// result is found by that name), to leave out a plugin.
func (r *Runtime) CheckList(list *libcni.NetworkConfigList, p *Pod) error {
	return r.Runtime.Check(context.Background(), list, p.RuntimeConf())
}

// GC tells the plugins which attachments are still valid.
func (r *Runtime) GC(valid ...*Pod) error {
	var attachments []types.GCAttachment
	for _, p := range valid {
		attachments = append(attachments, types.GCAttachment{ContainerID: p.ID, IfName: p.IfName})
	}
	return r.Runtime.GC(context.Background(), attachments)
}

// Status asks the plugins whether they are ready for ADDs.
func (r *Runtime) Status() error { return r.Runtime.Status(context.Background()) }
