// Package kubegc garbage-collects IPAM state that the Kubernetes API says is
// dead: addresses of pods that no longer exist, and blocks of Nodes that no
// longer exist. The CNI plugin's DEL releases addresses in the common case;
// this is the safety net for the DELs that never came (a node that crashed,
// a runtime that lost its state).
//
// Nothing is released on one look. A pod or node must be seen missing for a
// grace period first, and is then looked up on the API server itself, right
// before the release, because the informers it normally reads may lag.
//
// The package must not decide addresses (that is ipam's) nor write anything
// but blocks: pods and nodes it only reads.
package kubegc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flatnet-io/flatnet/ipam"
)

// Releaser is what the collector needs of ipam.Allocator: this node's name
// and releasing a handle.
type Releaser interface {
	Node() string
	Release(ctx context.Context, handle string) ([]ipam.Allocation, error)
}

// PodLookup finds a pod; (nil, nil) means there is none.
type PodLookup func(ctx context.Context, namespace, name string) (*corev1.Pod, error)

// NodeLookup tells whether a Node exists.
type NodeLookup func(ctx context.Context, name string) (bool, error)

// Lookups are where the collector looks pods and nodes up: Cached* in an
// informer (cheap, may lag), Live* on the API server (the last word).
type Lookups struct {
	CachedPod, LivePod   PodLookup
	CachedNode, LiveNode NodeLookup
}

// Config tunes a Collector.
type Config struct {
	// Grace is how long a pod or node must be seen missing before what it
	// held is released. 0 means DefaultGrace.
	Grace time.Duration
	// Interval is how often Run collects. 0 means DefaultInterval.
	Interval time.Duration
	Now      func() time.Time // nil: time.Now
	Logger   *slog.Logger     // nil: discard
}

// Defaults for Config.
const (
	DefaultGrace    = 5 * time.Minute
	DefaultInterval = time.Minute
)

// Collector releases what dead pods and nodes held.
type Collector struct {
	store   ipam.Store
	alloc   Releaser
	look    Lookups
	cfg     Config
	log     *slog.Logger
	missing map[string]time.Time // "pod <handle>" or "node <name>" → first seen missing
}

// Result is what one collection released.
type Result struct {
	Released []ipam.Allocation // this node's addresses of dead pods
	// Reclaimed are dead nodes' blocks deleted; Orphaned are dead nodes'
	// blocks kept without affinity because live nodes borrowed from them.
	Reclaimed, Orphaned []netip.Prefix
}

// New returns a collector for alloc's node, reading blocks from store.
func New(store ipam.Store, alloc Releaser, look Lookups, cfg Config) (*Collector, error) {
	if look.CachedPod == nil || look.LivePod == nil || look.CachedNode == nil || look.LiveNode == nil {
		return nil, fmt.Errorf("new garbage collector: %w: a lookup is missing", ipam.ErrInvalid)
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{store: store, alloc: alloc, look: look, cfg: cfg, log: log.With("node", alloc.Node()), missing: map[string]time.Time{}}, nil
}

// Run collects every Interval until ctx is done, logging what fails.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("garbage collection", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Collect makes one pass: it releases this node's addresses whose pods have
// been missing for the grace period, and reclaims the blocks of nodes
// missing that long. Errors of single items are joined; the pass goes on.
func (c *Collector) Collect(ctx context.Context) (Result, error) {
	var res Result
	blocks, err := c.store.ListBlocks(ctx)
	if err != nil {
		return res, fmt.Errorf("garbage collection: list blocks: %w", err)
	}
	now := c.cfg.Now()
	seen := map[string]bool{}
	var errs []error
	for h, addrs := range c.podHandles(blocks) {
		key := "pod " + h
		seen[key] = true
		released, err := c.collectPod(ctx, key, h, addrs, now)
		res.Released = append(res.Released, released...)
		errs = append(errs, err)
	}
	for _, b := range blocks {
		switch {
		case b.Affinity == "" && len(b.Allocations) == 0:
			errs = append(errs, c.collectOrphan(ctx, b, now))
		case b.Affinity != "" && b.Affinity != c.alloc.Node():
			key := "node " + b.Affinity
			seen[key] = true
			reclaimed, orphaned, err := c.collectNodeBlock(ctx, key, b, now)
			if reclaimed {
				res.Reclaimed = append(res.Reclaimed, b.CIDR)
			}
			if orphaned {
				res.Orphaned = append(res.Orphaned, b.CIDR)
			}
			errs = append(errs, err)
		}
	}
	for key := range c.missing {
		if !seen[key] { // released by someone else, or no longer held
			delete(c.missing, key)
		}
	}
	return res, errors.Join(errs...)
}

// podAllocation is the pod behind a handle and the addresses it holds.
type podAllocation struct {
	namespace, pod string
	addrs          []netip.Addr
}

// podHandles returns this node's handles that name a pod.
func (c *Collector) podHandles(blocks []ipam.Block) map[string]podAllocation {
	handles := map[string]podAllocation{}
	for _, b := range blocks {
		for _, a := range b.Allocations {
			if a.Attrs.Node != c.alloc.Node() || a.Attrs.Namespace == "" || a.Attrs.Pod == "" {
				continue
			}
			p := handles[a.Handle]
			p.namespace, p.pod = a.Attrs.Namespace, a.Attrs.Pod
			p.addrs = append(p.addrs, a.Addr)
			handles[a.Handle] = p
		}
	}
	return handles
}

func (c *Collector) collectPod(ctx context.Context, key, handle string, p podAllocation, now time.Time) ([]ipam.Allocation, error) {
	pod, err := c.look.CachedPod(ctx, p.namespace, p.pod)
	if err != nil {
		return nil, fmt.Errorf("look up pod %s/%s: %w", p.namespace, p.pod, err)
	}
	if Holds(pod, c.alloc.Node(), p.addrs) {
		delete(c.missing, key)
		return nil, nil
	}
	if !c.missingFor(key, now) {
		return nil, nil
	}
	// The informer may lag: ask the API server before letting go.
	if pod, err = c.look.LivePod(ctx, p.namespace, p.pod); err != nil {
		return nil, fmt.Errorf("look up pod %s/%s: %w", p.namespace, p.pod, err)
	}
	if Holds(pod, c.alloc.Node(), p.addrs) {
		delete(c.missing, key)
		return nil, nil
	}
	released, err := c.alloc.Release(ctx, handle)
	if err != nil {
		return released, fmt.Errorf("release %s of pod %s/%s: %w", handle, p.namespace, p.pod, err)
	}
	delete(c.missing, key)
	for _, a := range released {
		c.log.Info("released address of a pod that is gone", "pod", p.namespace+"/"+p.pod, "handle", handle, "addr", a.Addr)
	}
	return released, nil
}

// Holds tells whether pod still holds addrs on node: it exists, is bound to
// node (or not yet bound), has not terminated, and either has no addresses
// reported yet or reports one of addrs. A pod of the same name that got other
// addresses, or runs on another node, is a new pod: the old addresses leaked.
func Holds(pod *corev1.Pod, node string, addrs []netip.Addr) bool {
	if pod == nil {
		return false
	}
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != node {
		return false
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	if len(pod.Status.PodIPs) == 0 {
		return true
	}
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && slices.Contains(addrs, a) {
			return true
		}
	}
	return false
}

// missingFor records that key is missing and tells whether it has been so
// for the grace period.
func (c *Collector) missingFor(key string, now time.Time) bool {
	since, ok := c.missing[key]
	if !ok {
		c.missing[key] = now
		return false
	}
	return now.Sub(since) >= c.cfg.Grace
}
