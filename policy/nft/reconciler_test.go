package nft

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/policy/policytest"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// worldRuleset computes the ruleset of a truth-table scenario with every
// pod of the world local, handle "<ns>-<name>/eth0".
func worldRuleset(t testing.TB, policies []*networkingv1.NetworkPolicy, pods ...*corev1.Pod) policy.Ruleset {
	t.Helper()
	w := policytest.NewWorld()
	all := append(w.Pods, pods...)
	var local []policy.LocalPod
	for _, p := range all {
		var addrs []netip.Addr
		for _, ip := range p.Status.PodIPs {
			addrs = append(addrs, netip.MustParseAddr(ip.IP))
		}
		local = append(local, policy.LocalPod{Namespace: p.Namespace, Name: p.Name, Handle: p.Namespace + "-" + p.Name + "/eth0", Addrs: addrs})
	}
	rs := policy.Compute(policy.Cluster{Pods: all, Namespaces: w.Namespaces, Policies: policies}, local)
	if len(rs.Warnings) > 0 {
		t.Fatalf("warnings: %q", rs.Warnings)
	}
	return rs
}

func scenario(t testing.TB, name string) []*networkingv1.NetworkPolicy {
	for _, s := range policytest.Scenarios() {
		if s.Name == name {
			return s.Policies
		}
	}
	t.Fatalf("no scenario %q", name)
	return nil
}

const everything = "everything at once"

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; -update rewrites it):\n%s", path, diff)
	}
}

func TestRenderGolden(t *testing.T) {
	golden(t, "empty.nft", render(policy.Ruleset{}).String())
	golden(t, "everything.nft", render(worldRuleset(t, scenario(t, everything))).String())
	golden(t, "egress-named-ports.nft", render(worldRuleset(t, scenario(t, "named ports on egress resolve per destination pod"))).String())
}

// startFake runs a reconciler over a knftables fake until the test ends.
func startFake(t *testing.T, fake *knftables.Fake) *Reconciler {
	t.Helper()
	r := newReconciler(fake, slog.New(slog.DiscardHandler), settings{resync: 1 << 40})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// dump is the fake's content as nft commands, elements sorted (the fake
// keeps them in insertion order, the kernel in its own).
func dump(fake *knftables.Fake) string {
	var other, elems []string
	for _, line := range strings.Split(fake.Dump(), "\n") {
		if strings.HasPrefix(line, "add element ") {
			elems = append(elems, line)
		} else {
			other = append(other, line)
		}
	}
	slices.Sort(elems)
	return strings.Join(append(other, elems...), "\n")
}

func TestReconcileWritesOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	r := startFake(t, fake)
	policies := scenario(t, everything)
	r.Set(worldRuleset(t, policies))
	must(t, r.Sync(ctx))
	first := dump(fake)
	if !strings.Contains(first, "chain inet flatnet-policy forward { type filter hook forward priority 0") {
		t.Fatalf("no forward base chain:\n%s", first)
	}

	// The same ruleset again: nothing to write.
	tx := r.Stats().Transactions
	r.Set(worldRuleset(t, policies))
	must(t, r.Sync(ctx))
	if got := r.Stats().Transactions; got != tx {
		t.Errorf("an unchanged ruleset ran %d transactions", got-tx)
	}

	// A new pod in z: its chains, its map elements, its addresses in the
	// set of z's pods (x/a's ingress names it); no other chain is flushed
	// or rewritten.
	w := policytest.NewWorld()
	d := w.Pod("z", "a").DeepCopy()
	d.Name = "d"
	d.Status.PodIPs = []corev1.PodIP{{IP: "10.10.2.9"}, {IP: "fd10::2:9"}}
	r.Set(worldRuleset(t, policies, d))
	must(t, r.Sync(ctx))
	last := fake.LastTransaction.String()
	veth := policy.VethOf("z-d/eth0")
	elems := 0
	for _, line := range strings.Split(strings.TrimSpace(last), "\n") {
		switch {
		case strings.HasPrefix(line, "add table"):
		case strings.Contains(line, veth): // its chains, rules, map elements
		case strings.HasPrefix(line, "add element inet flatnet-policy pods-") &&
			(strings.Contains(line, "{ 10.10.2.9 }") || strings.Contains(line, "{ fd10::2:9 }")):
			elems++
		default:
			t.Errorf("a new pod wrote more than its own: %s", line)
		}
	}
	if elems != 2 {
		t.Errorf("%d set elements added for the new pod, want 2 (v4, v6):\n%s", elems, last)
	}
	if !strings.Contains(last, "add element inet flatnet-policy pod-ingress { "+veth+" : jump ingress-"+veth+" }") {
		t.Errorf("no ingress map element for the new pod in:\n%s", last)
	}

	// And it goes again: back to the first table, exactly.
	r.Set(worldRuleset(t, policies))
	must(t, r.Sync(ctx))
	if diff := cmp.Diff(first, dump(fake)); diff != "" {
		t.Errorf("after the pod left (-before +after):\n%s", diff)
	}
	if strings.Contains(fake.LastTransaction.String(), "flush chain inet flatnet-policy forward") {
		t.Errorf("a pod leaving flushed a base chain")
	}
}

func TestReconcileRepairsDrift(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	r := startFake(t, fake)
	r.Set(worldRuleset(t, scenario(t, everything)))
	must(t, r.Sync(ctx))
	want := dump(fake)
	veth := policy.VethOf("x-a/eth0")

	for _, tc := range []struct {
		name  string
		drift func(tab *knftables.FakeTable)
	}{{
		name: "a rule deleted",
		drift: func(tab *knftables.FakeTable) {
			c := tab.Chains["ingress-"+veth]
			c.Rules = c.Rules[1:]
		},
	}, {
		name: "rules reordered",
		drift: func(tab *knftables.FakeTable) {
			c := tab.Chains["forward"]
			c.Rules[0], c.Rules[1] = c.Rules[1], c.Rules[0]
		},
	}, {
		name: "a foreign rule added to a chain of ours",
		drift: func(tab *knftables.FakeTable) {
			c := tab.Chains["ingress-"+veth]
			c.Rules = append([]*knftables.Rule{{Chain: c.Name, Rule: "accept", Handle: ptr(9999)}}, c.Rules...)
		},
	}, {
		name: "a set element deleted, another added",
		drift: func(tab *knftables.FakeTable) {
			for _, s := range tab.Sets {
				if len(s.Elements) > 0 {
					s.Elements = append(s.Elements[1:], &knftables.Element{Set: s.Name, Key: []string{"192.0.2.1"}})
					return
				}
			}
			t.Fatal("no set with elements")
		},
	}, {
		name: "a map element deleted and one pointed elsewhere",
		drift: func(tab *knftables.FakeTable) {
			m := tab.Maps[ingressMap]
			m.Elements = m.Elements[1:]
			tab.Maps[egressMap].Elements[0].Value = []string{"accept"}
		},
	}, {
		name: "a pod's chain and a set deleted, a foreign chain and set added",
		drift: func(tab *knftables.FakeTable) {
			delete(tab.Chains, "egress-"+veth)
			for name := range tab.Sets {
				delete(tab.Sets, name)
				break
			}
			tab.Chains["foreign"] = &knftables.FakeChain{Chain: knftables.Chain{Name: "foreign"}}
			tab.Sets["foreign"] = &knftables.FakeSet{Set: knftables.Set{Name: "foreign", Type: "ipv4_addr"}}
		},
	}, {
		name:  "the table deleted",
		drift: nil,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.drift == nil {
				fake.Table = nil
			} else {
				tc.drift(fake.Table)
			}
			repairs := r.Stats().Repairs
			must(t, r.Resync(ctx))
			if diff := cmp.Diff(want, dump(fake)); diff != "" {
				t.Errorf("not repaired (-want +got):\n%s", diff)
			}
			if got := r.Stats().Repairs - repairs; got != 1 {
				t.Errorf("%d repairs counted, want 1", got)
			}
		})
	}
}

// A new reconciler over a table an earlier run left writes nothing, before
// its first Set or after it: policy stays enforced across a restart,
// without a flush or a window.
func TestRestartWritesNothing(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	rs := worldRuleset(t, scenario(t, everything))
	{
		r := newReconciler(fake, nil, settings{})
		r.Set(rs)
		runOnce(t, r)
	}
	before := dump(fake)
	r := startFake(t, fake)
	must(t, r.Sync(ctx)) // not told anything yet
	if s := r.Stats(); s.Transactions != 0 {
		t.Errorf("before Set: %+v, want no transaction", s)
	}
	r.Set(rs)
	must(t, r.Sync(ctx))
	if s := r.Stats(); s.Transactions != 0 || s.Reads != 1 {
		t.Errorf("restart: %+v, want one read and no transaction", s)
	}
	if diff := cmp.Diff(before, dump(fake)); diff != "" {
		t.Errorf("restart changed the table:\n%s", diff)
	}
}

// runOnce runs r until its first pass is done.
func runOnce(t *testing.T, r *Reconciler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	err := r.Sync(ctx)
	cancel()
	if rerr := <-done; rerr != nil {
		t.Fatal(rerr)
	}
	must(t, err)
}

// failingFake fails the next n transactions.
type failingFake struct {
	*knftables.Fake
	fail int
}

func (f *failingFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail > 0 {
		f.fail--
		return errors.New("injected failure")
	}
	return f.Fake.Run(ctx, tx)
}

func TestFailedWriteIsRetriedAfterARead(t *testing.T) {
	ctx := context.Background()
	fake := &failingFake{Fake: knftables.NewFake(knftables.InetFamily, TableName)}
	r := newReconciler(fake, nil, settings{resync: 1 << 40})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(cctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	must(t, r.Sync(ctx)) // the empty table in place
	fake.fail = 1
	r.Set(worldRuleset(t, scenario(t, everything)))
	must(t, r.Sync(ctx)) // fails once, reads, succeeds
	fake.fail = 2
	r.Set(worldRuleset(t, nil))
	if err := r.Sync(ctx); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Errorf("Sync with two failures = %v, want the failure", err)
	}
	s := r.Stats()
	if s.Failures != 1 || s.LastErr == nil {
		t.Errorf("stats %+v, want one failure recorded", s)
	}
	must(t, r.Sync(ctx))
	if diff := cmp.Diff(render(worldRuleset(t, nil)).String(), fromFake(t, fake.Fake)); diff != "" {
		t.Errorf("after the retry (-want +got):\n%s", diff)
	}
}

// fromFake reads the fake back as a table and renders it the way render's
// tables print, to compare with a wanted table (rules by comment).
func fromFake(t *testing.T, fake *knftables.Fake) string {
	t.Helper()
	tab := newTable()
	for name, c := range fake.Table.Chains {
		ch := &chain{comment: deref(c.Comment)}
		if c.Hook != nil {
			ch.hook = string(*c.Hook)
		}
		for _, r := range c.Rules {
			ch.rules = append(ch.rules, rule{text: r.Rule, comment: deref(r.Comment)})
		}
		tab.chains[name] = ch
	}
	for name, s := range fake.Table.Sets {
		ns := &set{typ: s.Type, comment: deref(s.Comment), elems: map[string]element{}}
		for _, e := range s.Elements {
			ns.add(element{key: e.Key})
		}
		tab.sets[name] = ns
	}
	for name, m := range fake.Table.Maps {
		ns := &set{typ: m.Type, comment: deref(m.Comment), elems: map[string]element{}}
		for _, e := range m.Elements {
			ns.add(element{key: e.Key, value: e.Value})
		}
		tab.maps[name] = ns
	}
	return tab.String()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
