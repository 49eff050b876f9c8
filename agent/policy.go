package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"

	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamgrpc"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/kube"
	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/policy/kubepolicy"
	"github.com/flatnet-io/flatnet/policy/nft"
)

// The NetworkPolicy stack (docs/policy.md), whole: the nftables reconciler
// and the controller that feeds it from informers and IPAM. Off, the agent
// deletes the table an earlier run may have left, so no stale policy stays.

// policyStack runs while the agent does; nil when policy is off.
type policyStack struct {
	ctl    *kubepolicy.Controller
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startPolicy starts the stack when cfg.Policy.Enabled, programming the
// table in netns (nil: the agent's). Off, it removes the table and returns
// nil.
func startPolicy(ctx context.Context, cfg config.Config, alloc *ipam.Allocator, netns ns.NetNS, log *slog.Logger) (*policyStack, error) {
	log = log.With("component", "policy")
	if !cfg.Policy.Enabled {
		removePolicyTable(ctx, netns, log)
		return nil, nil
	}
	rc, err := kube.RESTConfig(cfg.Datastore.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	core, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	networking, err := networkingv1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	rec, err := nft.New(nft.Options{NetNS: netns, Log: log, Resync: cfg.Policy.Resync})
	if err != nil {
		return nil, fmt.Errorf("policy.enabled: %w", err)
	}
	ctl := kubepolicy.New(kubepolicy.Options{
		Policies:   kube.NetworkPolicyInformer(networking),
		Namespaces: kube.NamespaceInformer(core),
		Pods:       kube.AllPodsInformer(core),
		Local:      func(ctx context.Context) ([]policy.LocalPod, error) { return localPods(ctx, alloc, cfg.NodeName) },
		Enforcer:   rec,
		Log:        log,
	})
	ctx, cancel := context.WithCancel(ctx)
	p := &policyStack{ctl: ctl, cancel: cancel}
	p.wg.Go(func() {
		if err := rec.Run(ctx); err != nil {
			log.Error("policy reconciler stopped", "err", err)
		}
	})
	p.wg.Go(func() {
		if err := ctl.Run(ctx); err != nil {
			log.Error("policy controller stopped", "err", err)
		}
	})
	return p, nil
}

// stop ends the stack and waits for it; the table stays, enforced.
func (p *policyStack) stop() {
	if p == nil {
		return
	}
	p.cancel()
	p.wg.Wait()
}

// register serves the IPAM service on srv; with policy on, an Allocate
// answers only once the new pod's rules are in the kernel, and a Release
// drops them.
func (p *policyStack) register(srv *grpc.Server, ipamSrv *ipamgrpc.Server) {
	if p == nil {
		ipamSrv.Register(srv)
		return
	}
	ipampb.RegisterIPAMServer(srv, &policyIPAM{Server: ipamSrv, ctl: p.ctl})
}

// policyIPAM is the IPAM service with the policy controller told of
// attachments.
type policyIPAM struct {
	*ipamgrpc.Server
	ctl *kubepolicy.Controller
}

func (s *policyIPAM) Allocate(ctx context.Context, req *ipampb.AllocateRequest) (*ipampb.AllocateResponse, error) {
	resp, err := s.Server.Allocate(ctx, req)
	if err != nil || req.GetAttrs().GetPod() == "" { // not a Kubernetes pod: no policy names it
		return resp, err
	}
	lp := policy.LocalPod{Namespace: req.GetAttrs().GetNamespace(), Name: req.GetAttrs().GetPod(), Handle: req.GetHandle()}
	for _, a := range resp.GetAddresses() {
		if pfx, err := netip.ParsePrefix(a.GetAddress()); err == nil {
			lp.Addrs = append(lp.Addrs, pfx.Addr())
		}
	}
	if err := s.ctl.Attach(ctx, lp); err != nil {
		return nil, status.Errorf(codes.Unavailable, "allocate %s: the pod's network policy is not in place: %v", req.GetHandle(), err)
	}
	return resp, nil
}

func (s *policyIPAM) Release(ctx context.Context, req *ipampb.ReleaseRequest) (*ipampb.ReleaseResponse, error) {
	resp, err := s.Server.Release(ctx, req)
	if err == nil {
		s.ctl.Detach(req.GetHandle())
	}
	return resp, err
}

// localPods lists node's attachments of Kubernetes pods from IPAM, by handle.
func localPods(ctx context.Context, alloc *ipam.Allocator, node string) ([]policy.LocalPod, error) {
	blocks, err := alloc.Blocks(ctx)
	if err != nil {
		return nil, err
	}
	byHandle := map[string]*policy.LocalPod{}
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.Attrs.Node != node || al.Attrs.Pod == "" {
				continue
			}
			lp := byHandle[al.Handle]
			if lp == nil {
				lp = &policy.LocalPod{Namespace: al.Attrs.Namespace, Name: al.Attrs.Pod, Handle: al.Handle}
				byHandle[al.Handle] = lp
			}
			lp.Addrs = append(lp.Addrs, al.Addr)
		}
	}
	out := make([]policy.LocalPod, 0, len(byHandle))
	for _, lp := range byHandle {
		out = append(out, *lp)
	}
	slices.SortFunc(out, func(a, b policy.LocalPod) int { return strings.Compare(a.Handle, b.Handle) })
	return out, nil
}

// removePolicyTable deletes the policy table when policy is off. Without
// nft there is none to delete; a failure is logged, not fatal.
func removePolicyTable(ctx context.Context, netns ns.NetNS, log *slog.Logger) {
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	removed, err := nft.RemoveIfPresent(ctx, netns)
	switch {
	case err != nil:
		log.Warn("policy is off, but its table could not be removed", "err", err)
	case removed:
		log.Info("policy is off: removed the table an earlier run left", "table", "inet "+nft.TableName)
	}
}
