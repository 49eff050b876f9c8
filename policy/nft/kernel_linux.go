package nft

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"
)

// Options configure New. A zero field takes the default in parentheses.
type Options struct {
	// NetNS is the network namespace whose table the reconciler programs;
	// nil means the namespace of the calling thread.
	NetNS ns.NetNS
	// Log receives the reconciler's logs; nil discards them.
	Log *slog.Logger
	// Debounce is how long changes are coalesced before a write (2ms).
	Debounce time.Duration
	// Resync is how often the table is read and repaired (10s).
	Resync time.Duration
	// Retry is the first retry after a failed write, doubling up to Resync (500ms).
	Retry time.Duration
}

// New checks that nft works in opts.NetNS and returns a reconciler of the
// table there. It reads or writes nothing until Run.
func New(opts Options) (*Reconciler, error) {
	nft, err := open(opts.NetNS)
	if err != nil {
		return nil, err
	}
	return newReconciler(nft, opts.Log, settings{debounce: opts.Debounce, resync: opts.Resync, retry: opts.Retry}), nil
}

// RemoveIfPresent deletes the table from netns (nil: the caller's) if it
// is there, and says whether it was: for an agent whose policy is turned
// off. Nothing else is touched, and an absent table is not written to.
func RemoveIfPresent(ctx context.Context, netns ns.NetNS) (bool, error) {
	nft, err := open(netns)
	if err != nil {
		return false, err
	}
	if _, err := nft.ListRules(ctx, ""); err != nil {
		if knftables.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("list table inet %s: %w", TableName, err)
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return false, fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	return true, nil
}

func open(netns ns.NetNS) (knftables.Interface, error) {
	var nft knftables.Interface
	err := inNS(netns, func() error {
		var err error
		nft, err = knftables.New(knftables.InetFamily, TableName)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	if netns == nil {
		return nft, nil
	}
	return nsInterface{nft: nft, netns: netns}, nil
}

// nsInterface runs every nft command of a knftables.Interface inside a
// network namespace: the command is started from a thread in it.
type nsInterface struct {
	nft   knftables.Interface
	netns ns.NetNS
}

func inNS(netns ns.NetNS, f func() error) error {
	if netns == nil {
		return f()
	}
	return netns.Do(func(ns.NetNS) error { return f() })
}

func (n nsInterface) NewTransaction() *knftables.Transaction { return n.nft.NewTransaction() }

func (n nsInterface) Run(ctx context.Context, tx *knftables.Transaction) error {
	return inNS(n.netns, func() error { return n.nft.Run(ctx, tx) })
}

func (n nsInterface) Check(ctx context.Context, tx *knftables.Transaction) error {
	return inNS(n.netns, func() error { return n.nft.Check(ctx, tx) })
}

func (n nsInterface) List(ctx context.Context, objectType string) (out []string, err error) {
	err = inNS(n.netns, func() error { out, err = n.nft.List(ctx, objectType); return err })
	return out, err
}

func (n nsInterface) ListRules(ctx context.Context, chain string) (out []*knftables.Rule, err error) {
	err = inNS(n.netns, func() error { out, err = n.nft.ListRules(ctx, chain); return err })
	return out, err
}

func (n nsInterface) ListElements(ctx context.Context, objectType, name string) (out []*knftables.Element, err error) {
	err = inNS(n.netns, func() error { out, err = n.nft.ListElements(ctx, objectType, name); return err })
	return out, err
}
