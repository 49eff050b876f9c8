// Package kubepolicy runs NetworkPolicy enforcement for one node from the
// Kubernetes API: it follows NetworkPolicies, Namespaces and Pods through
// informers and the node's attachments as IPAM records them, computes the
// node's policy.Ruleset on every change, and hands it to an Enforcer (the
// policy/nft Reconciler). Attach is the CNI ADD's way in: it returns once
// the new pod's rules are in the kernel.
//
// It must not render or write nftables (policy/nft does) nor decide what a
// policy means (package policy does); it never writes to the API.
package kubepolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/flatnet-io/flatnet/policy"
)

// Enforcer puts a Ruleset in the kernel: Set declares it, Sync returns once
// the last one Set is there.
type Enforcer interface {
	Set(policy.Ruleset)
	Sync(ctx context.Context) error
}

// Options configure New. A zero duration takes the default in parentheses.
type Options struct {
	// The informers, which Run runs: every NetworkPolicy, Namespace and Pod
	// (kube.NetworkPolicyInformer, NamespaceInformer, AllPodsInformer).
	Policies, Namespaces, Pods cache.SharedIndexInformer
	// Local lists the node's attachments as IPAM records them.
	Local func(ctx context.Context) ([]policy.LocalPod, error)
	// Enforcer receives every Ruleset.
	Enforcer Enforcer
	// Refresh is how often Local is listed again (30s): the safety net for
	// attachments that came or went without Attach or Detach (GC).
	Refresh time.Duration
	// Debounce is how long changes are coalesced before a Ruleset is
	// computed (20ms).
	Debounce time.Duration
	Log      *slog.Logger
}

// Controller computes and enforces the node's policy. Attach and Detach may
// be called from any goroutine; Run's goroutine computes in the background.
type Controller struct {
	o      Options
	ready  chan struct{} // closed after the first Ruleset was Set
	kick   chan struct{}
	mu     sync.Mutex
	local  map[string]policy.LocalPod // by handle
	gen    uint64                     // counts Attach and Detach
	events map[string]event           // Attach and Detach since the refresh in flight began, by handle
	warned map[string]bool
}

type event struct {
	gen    uint64
	pod    policy.LocalPod
	detach bool
}

// New returns a controller; nothing happens until Run.
func New(o Options) *Controller {
	if o.Refresh <= 0 {
		o.Refresh = 30 * time.Second
	}
	if o.Debounce <= 0 {
		o.Debounce = 20 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		o:      o,
		ready:  make(chan struct{}),
		kick:   make(chan struct{}, 1),
		local:  map[string]policy.LocalPod{},
		events: map[string]event{},
		warned: map[string]bool{},
	}
}

// Run runs the informers, waits for them and for a first listing of the
// local attachments, sets the first Ruleset, and then recomputes on every
// change until ctx ends. Nothing is Set before all that: an agent
// restarting leaves the policy of its last run in place until it knows the
// whole of the new one.
func (c *Controller) Run(ctx context.Context) error {
	for _, inf := range []cache.SharedIndexInformer{c.o.Policies, c.o.Namespaces, c.o.Pods} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.poke() },
			UpdateFunc: func(any, any) { c.poke() },
			DeleteFunc: func(any) { c.poke() },
		}); err != nil {
			return fmt.Errorf("policy informers: %w", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, inf := range []cache.SharedIndexInformer{c.o.Policies, c.o.Namespaces, c.o.Pods} {
		wg.Go(func() { inf.Run(ctx.Done()) })
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.o.Policies.HasSynced, c.o.Namespaces.HasSynced, c.o.Pods.HasSynced) {
		return nil // ctx ended
	}
	for retry := time.Second; ; retry = min(2*retry, c.o.Refresh) {
		err := c.refresh(ctx)
		if err == nil {
			break
		}
		c.o.Log.Warn("list this node's attachments; will retry", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
	c.mu.Lock()
	n := len(c.local)
	c.mu.Unlock()
	close(c.ready)
	c.o.Log.Info("network policy enforced", "pods", n)

	refresh := time.NewTicker(c.o.Refresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			select { // coalesce
			case <-time.After(c.o.Debounce):
			case <-ctx.Done():
				return nil
			}
			c.mu.Lock()
			c.apply()
			c.mu.Unlock()
		case <-refresh.C:
			if err := c.refresh(ctx); err != nil && ctx.Err() == nil {
				c.o.Log.Warn("list this node's attachments", "err", err)
			}
		}
	}
}

// Attach adds an attachment of this node (a CNI ADD's) and returns once the
// kernel enforces its policy, or ctx ends. Before Run has set its first
// Ruleset, it waits for that.
func (c *Controller) Attach(ctx context.Context, lp policy.LocalPod) error {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return fmt.Errorf("%w (informers syncing): %w", ErrNotReady, context.Cause(ctx))
	}
	c.mu.Lock()
	c.gen++
	c.local[lp.Handle] = lp
	c.events[lp.Handle] = event{gen: c.gen, pod: lp}
	c.apply()
	c.mu.Unlock()
	if err := c.o.Enforcer.Sync(ctx); err != nil {
		return fmt.Errorf("network policy of %s/%s: %w", lp.Namespace, lp.Name, err)
	}
	return nil
}

// Detach removes an attachment (a CNI DEL's); its rules go soon after.
func (c *Controller) Detach(handle string) {
	c.mu.Lock()
	c.gen++
	delete(c.local, handle)
	c.events[handle] = event{gen: c.gen, detach: true}
	c.mu.Unlock()
	c.poke()
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// refresh lists the local attachments and computes. An Attach or Detach
// that happened while the listing was read wins over it.
func (c *Controller) refresh(ctx context.Context) error {
	c.mu.Lock()
	start := c.gen
	c.mu.Unlock()
	listed, err := c.o.Local(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	local := make(map[string]policy.LocalPod, len(listed))
	for _, lp := range listed {
		local[lp.Handle] = lp
	}
	for h, ev := range c.events {
		switch {
		case ev.gen <= start: // the listing saw it
		case ev.detach:
			delete(local, h)
		default:
			local[h] = ev.pod
		}
	}
	clear(c.events)
	c.local = local
	c.apply()
	return nil
}

// apply computes the Ruleset and sets it. Call with mu held.
func (c *Controller) apply() {
	cl := policy.Cluster{}
	for _, o := range c.o.Policies.GetStore().List() {
		if p, ok := o.(*networkingv1.NetworkPolicy); ok {
			cl.Policies = append(cl.Policies, p)
		}
	}
	for _, o := range c.o.Namespaces.GetStore().List() {
		if n, ok := o.(*corev1.Namespace); ok {
			cl.Namespaces = append(cl.Namespaces, n)
		}
	}
	for _, o := range c.o.Pods.GetStore().List() {
		if p, ok := o.(*corev1.Pod); ok {
			cl.Pods = append(cl.Pods, p)
		}
	}
	local := make([]policy.LocalPod, 0, len(c.local))
	for _, lp := range c.local {
		local = append(local, lp)
	}
	rs := policy.Compute(cl, local)
	warned := make(map[string]bool, len(rs.Warnings))
	for _, w := range rs.Warnings { // each once while it lasts
		if !c.warned[w] {
			c.o.Log.Warn("network policy", "warning", w)
		}
		warned[w] = true
	}
	c.warned = warned
	c.o.Enforcer.Set(rs)
}

// ErrNotReady is Attach's error when ctx ends before the first Ruleset.
var ErrNotReady = errors.New("network policy not ready")
