// Package cniruntime calls CNI plugins through libcni from inside a node's
// network namespace, as containerd or CRI-O do on that node: ADD, DEL,
// CHECK, GC and STATUS of a network configuration list, with a result cache
// of its own. It holds no pods and makes no namespaces: callers give it the
// runtime configuration of each attachment. It must not do a plugin's work.
package cniruntime

import (
	"context"
	"fmt"
	"os"
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

// callTimeout bounds one call of the plugin chain.
const callTimeout = 30 * time.Second

// Runtime is a network configuration list and the plugins that implement
// it, called from inside one namespace.
type Runtime struct {
	// NetNS is the path of the namespace the plugins run in: the node's.
	NetNS string
	CNI   *libcni.CNIConfig
	List  *libcni.NetworkConfigList
}

// New parses a network configuration list (JSON) and finds its plugins in
// pluginDirs; cacheDir keeps the results DEL and CHECK need.
func New(netnsPath string, conflist []byte, pluginDirs []string, cacheDir string) (*Runtime, error) {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("network configuration list: %w", err)
	}
	// An exec of our own: libcni makes its default lazily, unsynchronised,
	// on the first call, which races when the first calls are concurrent.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Runtime{NetNS: netnsPath, CNI: libcni.NewCNIConfigWithCacheDir(pluginDirs, cacheDir, exec), List: list}, nil
}

func (r *Runtime) in(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return ns.WithNetNSPath(r.NetNS, func(ns.NetNS) error { return fn(ctx) })
}

// Add attaches and returns the result in the current CNI version.
func (r *Runtime) Add(ctx context.Context, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := r.in(ctx, func(ctx context.Context) (err error) {
		res, err = r.CNI.AddNetworkList(ctx, r.List, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Del detaches.
func (r *Runtime) Del(ctx context.Context, rt *libcni.RuntimeConf) error {
	return r.in(ctx, func(ctx context.Context) error { return r.CNI.DelNetworkList(ctx, r.List, rt) })
}

// Check verifies an attachment against the cached result, with list (nil:
// the runtime's own); another list of the same network name finds the same
// cached result, so a plugin can be left out.
func (r *Runtime) Check(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	if list == nil {
		list = r.List
	}
	return r.in(ctx, func(ctx context.Context) error { return r.CNI.CheckNetworkList(ctx, list, rt) })
}

// GC tells the plugins which attachments are still valid.
func (r *Runtime) GC(ctx context.Context, valid []types.GCAttachment) error {
	args := &libcni.GCArgs{ValidAttachments: valid}
	return r.in(ctx, func(ctx context.Context) error { return r.CNI.GCNetworkList(ctx, r.List, args) })
}

// Status asks the plugins whether they are ready for ADDs.
func (r *Runtime) Status(ctx context.Context) error {
	return r.in(ctx, func(ctx context.Context) error { return r.CNI.GetStatusNetworkList(ctx, r.List) })
}
