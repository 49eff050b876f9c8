package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// ReferencePlugins is where Debian's containernetworking-plugins live.
const ReferencePlugins = "/usr/lib/cni"

// Runtime calls CNI plugins through libcni from inside a node's namespace, as
// containerd or CRI-O would on that node.
type Runtime struct {
	Node *NetNS
	CNI  *libcni.CNIConfig
	List *libcni.NetworkConfigList
}

// NewRuntime loads a network configuration list (JSON) from a file on disk,
// with the built flatnet plugin and the reference plugins on the plugin path
// and a result cache of the test's own.
func NewRuntime(t testing.TB, node *NetNS, conflist string) *Runtime {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "10-flatnet.conflist")
	if err := os.WriteFile(path, []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// An exec of our own: libcni makes its default lazily, unsynchronised, on
	// the first call, which races when the first calls are concurrent.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	cni := libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(Root(), "bin"), ReferencePlugins}, filepath.Join(dir, "cache"), exec)
	return &Runtime{Node: node, CNI: cni, List: list}
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
		NetNS:          "/run/netns/" + p.Name,
		IfName:         p.IfName,
		Args:           p.Labels,
		CapabilityArgs: p.Caps,
	}
}

func (r *Runtime) in(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.Node.Do(func(ns.NetNS) error { return fn(ctx) })
}

// Add attaches the pod and returns the result in the current CNI version.
func (r *Runtime) Add(p *Pod) (*current.Result, error) {
	return r.AddConf(p.RuntimeConf())
}

// AddConf attaches with a runtime configuration as given.
func (r *Runtime) AddConf(rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := r.in(func(ctx context.Context) (err error) {
		res, err = r.CNI.AddNetworkList(ctx, r.List, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Del detaches the pod.
func (r *Runtime) Del(p *Pod) error { return r.DelConf(p.RuntimeConf()) }

// DelConf detaches with a runtime configuration as given.
func (r *Runtime) DelConf(rt *libcni.RuntimeConf) error {
	return r.in(func(ctx context.Context) error { return r.CNI.DelNetworkList(ctx, r.List, rt) })
}

// Check verifies the pod's attachment against the cached result.
func (r *Runtime) Check(p *Pod) error { return r.CheckList(r.List, p) }

// CheckList runs CHECK with another list of the same network name (the cached
// result is found by that name), to leave out a plugin.
func (r *Runtime) CheckList(list *libcni.NetworkConfigList, p *Pod) error {
	return r.in(func(ctx context.Context) error { return r.CNI.CheckNetworkList(ctx, list, p.RuntimeConf()) })
}

// GC tells the plugins which attachments are still valid.
func (r *Runtime) GC(valid ...*Pod) error {
	args := &libcni.GCArgs{}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.ID, IfName: p.IfName})
	}
	return r.in(func(ctx context.Context) error { return r.CNI.GCNetworkList(ctx, r.List, args) })
}

// Status asks the plugins whether they are ready for ADDs.
func (r *Runtime) Status() error {
	return r.in(func(ctx context.Context) error { return r.CNI.GetStatusNetworkList(ctx, r.List) })
}
