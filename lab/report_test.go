package lab

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// onePodANode is the report of two-node-tor brought up with one pod a node
// (`flatnet-lab up --pods 1`): every check passed, and no node has two pods
// to try pod→pod on one node.
func onePodANode() *Report {
	r := &Report{
		Sessions: []Session{
			{Node: "node1", Peer: "tor (10.0.1.1 AS65000)", State: "established", Received: 1},
			{Node: "node2", Peer: "tor (10.0.2.1 AS65000)", State: "established", Received: 1},
			{Node: "tor", Peer: "10.0.1.2 AS64512 ipv4Unicast", State: "established", Received: 1},
			{Node: "tor", Peer: "10.0.2.2 AS64513 ipv4Unicast", State: "established", Received: 1},
		},
		Routes: map[string][]string{
			"node1": {"blackhole 10.244.0.0/26", "10.244.0.64/26 via 10.0.1.1 dev eth1"},
			"node2": {"10.244.0.0/26 via 10.0.2.1 dev eth1", "blackhole 10.244.0.64/26"},
		},
	}
	for _, c := range []struct{ rule, from, to string }{
		{"pod→pod across nodes", "node1/pod1", "node2/pod1"},
		{"pod→pod across nodes", "node2/pod1", "node1/pod1"},
		{"node→pod", "node1", "node2/pod1"},
		{"node→pod", "node2", "node1/pod1"},
		{"pod→node", "node1/pod1", "node2"},
		{"pod→node", "node2/pod1", "node1"},
		{"localhost in pod", "node1/pod1", "node1/pod1"},
		{"localhost in pod", "node2/pod1", "node2/pod1"},
	} {
		r.Checks = append(r.Checks, Check{Rule: c.rule, From: c.from, To: c.to, Target: "tcp", OK: true})
	}
	return r
}

// TestPrintNothingToTry shows that a check with nothing to try is "n/a",
// not "NO", in a report where every check passed.
func TestPrintNothingToTry(t *testing.T) {
	r := onePodANode()
	if !r.OK() {
		t.Fatal("every check passed, but the report is not OK")
	}
	var out bytes.Buffer
	r.Print(&out)
	if !regexp.MustCompile(`(?m)^pod→pod same node +n/a \(0/0\)$`).Match(out.Bytes()) {
		t.Errorf("pod→pod same node with no node of two pods is not n/a:\n%s", out.String())
	}
	if regexp.MustCompile(`\bNO\b`).Match(out.Bytes()) {
		t.Errorf("a report where every check passed says NO:\n%s", out.String())
	}
	golden(t, "report-one-pod-a-node.txt", out.Bytes())
}

// TestPrintFailed shows a failed check as NO, with its reason below the
// table.
func TestPrintFailed(t *testing.T) {
	r := onePodANode()
	r.Checks[0].OK, r.Checks[0].Detail = false, "dial tcp 10.244.0.64:7: i/o timeout"
	if r.OK() {
		t.Fatal("a check failed, but the report is OK")
	}
	var out bytes.Buffer
	r.Print(&out)
	golden(t, "report-failed.txt", out.Bytes())
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}
