package nft

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/policy"
	"github.com/flatnet-io/flatnet/test/harness"
)

// foreignTable is another program's table, which flatnet must never touch.
const foreignTable = `table inet foreign {
	set addrs {
		type ipv4_addr
		elements = { 192.0.2.7 }
	}

	chain forward {
		type filter hook forward priority -5; policy accept;
		ip saddr @addrs counter packets 0 bytes 0 accept comment "not ours"
	}
}`

// addForeign adds the foreign table to n and returns nft's listing of it.
func addForeign(t *testing.T, n *harness.NetNS) string {
	t.Helper()
	n.MustExec(t, "sh", "-c", "nft -f - <<'EOF'\n"+foreignTable+"\nEOF")
	return n.MustExec(t, "nft", "list", "table", "inet", "foreign")
}

func checkForeign(t *testing.T, n *harness.NetNS, want string) {
	t.Helper()
	if got := n.MustExec(t, "nft", "list", "table", "inet", "foreign"); got != want {
		t.Errorf("the foreign table changed:\n%s\nwant\n%s", got, want)
	}
}

// converged checks that a fresh reconciler reading n's table finds nothing
// to write for rs: the kernel holds exactly the rendering, read back
// through nft's JSON (comments, set and map elements in nft's own spelling).
func converged(t *testing.T, n *harness.NetNS, rs policy.Ruleset) {
	t.Helper()
	r, err := New(Options{NetNS: n.NetNS})
	if err != nil {
		t.Fatal(err)
	}
	have, err := read(context.Background(), r.nft)
	if err != nil {
		t.Fatal(err)
	}
	tx := r.nft.NewTransaction()
	if n := plan(tx, render(rs), have); n != 0 {
		t.Errorf("the kernel's table differs from the rendering; a fresh reconciler would write:\n%s", tx)
	}
}

// ruleHandles returns the handles of chain's rules, in order.
func ruleHandles(t *testing.T, n *harness.NetNS, chain string) []int {
	t.Helper()
	out := n.MustExec(t, "nft", "-j", "list", "chain", "inet", TableName, chain)
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Handle int `json:"handle"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	var hs []int
	for _, o := range doc.Nftables {
		if o.Rule != nil {
			hs = append(hs, o.Rule.Handle)
		}
	}
	return hs
}

func TestPrivilegedApplyRepairRestart(t *testing.T) {
	ctx := context.Background()
	n := newNodeNS(t)
	foreign := addForeign(t, n)
	r, stop := startReconciler(t, n)
	rs := worldRuleset(t, scenario(t, everything))
	r.Set(rs)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	converged(t, n, rs)
	checkForeign(t, n, foreign)
	if s := r.Stats(); s.Transactions != 1 {
		t.Errorf("%d transactions for the first ruleset, want 1: %+v", s.Transactions, s)
	}

	veth := policy.VethOf("x-a/eth0")
	pods := rs.Sets[0].Name + "-v4"
	for _, tc := range []struct {
		name  string
		drift []string // nft commands, run by hand
	}{
		{"a rule deleted", []string{fmt.Sprintf("delete rule inet %s ingress-%s handle %d", TableName, veth, ruleHandles(t, n, "ingress-"+veth)[0])}},
		{"the default deny deleted", []string{fmt.Sprintf("delete rule inet %s egress-%s handle %d", TableName, veth, ruleHandles(t, n, "egress-"+veth)[0])}},
		{"a rule inserted", []string{fmt.Sprintf("insert rule inet %s forward accept", TableName)}},
		{"a set element deleted, another added", []string{
			fmt.Sprintf("delete element inet %s %s { 10.10.2.1 }", TableName, pods),
			fmt.Sprintf("add element inet %s %s { 192.0.2.9 }", TableName, pods),
		}},
		{"a map element deleted", []string{fmt.Sprintf("delete element inet %s pod-ingress { %s }", TableName, veth)}},
		{"a pod's chain deleted", []string{
			fmt.Sprintf("delete element inet %s pod-egress { %s }", TableName, veth),
			fmt.Sprintf("flush chain inet %s egress-%s", TableName, veth),
			fmt.Sprintf("delete chain inet %s egress-%s", TableName, veth),
		}},
		{"a foreign chain and set in our table", []string{
			fmt.Sprintf("add chain inet %s stranger", TableName),
			fmt.Sprintf("add set inet %s stranger { type ipv4_addr; }", TableName),
		}},
		{"the table deleted", []string{"delete table inet " + TableName}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range tc.drift {
				n.MustExec(t, append([]string{"nft"}, strings.Fields(cmd)...)...)
			}
			repairs := r.Stats().Repairs
			if err := r.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			converged(t, n, rs)
			if got := r.Stats().Repairs - repairs; got != 1 {
				t.Errorf("%d repairs, want 1", got)
			}
			checkForeign(t, n, foreign)
		})
	}

	// Stopped, the agent leaves the table: policy stays enforced.
	stop()
	converged(t, n, rs)
	// A new run over it writes nothing, not even a flush.
	r2, _ := startReconciler(t, n)
	if err := r2.Sync(ctx); err != nil { // before Set: hands off
		t.Fatal(err)
	}
	r2.Set(rs)
	if err := r2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if s := r2.Stats(); s.Transactions != 0 || s.Reads != 1 {
		t.Errorf("restart: %+v, want one read and no transaction", s)
	}
	// A pod leaves: its chains go with it, the rest stays.
	var fewer policy.Ruleset
	fewer.Sets = rs.Sets
	for _, p := range rs.Pods {
		if p.Veth != veth {
			fewer.Pods = append(fewer.Pods, p)
		}
	}
	r2.Set(fewer)
	if err := r2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	converged(t, n, fewer)
	if out := n.MustExec(t, "nft", "list", "table", "inet", TableName); strings.Contains(out, veth) {
		t.Errorf("the pod that left is still in the table:\n%s", out)
	}

	// Policy turned off: the table goes, the foreign one stays.
	if removed, err := RemoveIfPresent(ctx, n.NetNS); err != nil || !removed {
		t.Fatalf("RemoveIfPresent() = %v, %v; want true, nil", removed, err)
	}
	if out, err := n.Exec("nft", "list", "table", "inet", TableName); err == nil {
		t.Errorf("table still there after RemoveIfPresent:\n%s", out)
	}
	if removed, err := RemoveIfPresent(ctx, n.NetNS); err != nil || removed {
		t.Errorf("RemoveIfPresent of an absent table = %v, %v; want false, nil", removed, err)
	}
	checkForeign(t, n, foreign)
}
