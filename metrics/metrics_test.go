package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flatnet-io/flatnet/bgp"
	"github.com/flatnet-io/flatnet/bgp/bgptest"
	"github.com/flatnet-io/flatnet/dataplane"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares what c collects with testdata/name.prom, or rewrites it
// with -update.
func golden(t *testing.T, c prometheus.Collector, name string) {
	t.Helper()
	file := filepath.Join("testdata", name+".prom")
	if *update {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			if _, err := expfmtWrite(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.CollectAndCompare(c, f); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

func fakeSpeaker(t *testing.T) *bgptest.Speaker {
	t.Helper()
	sp := bgptest.New(bgp.Config{ASN: 64512})
	if err := sp.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	tor, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.2")
	if err := sp.SetPeers(t.Context(), []bgp.Peer{
		{Name: "mesh-b", Address: b, ASN: 64512, Mesh: true},
		{Name: "tor", Address: tor, ASN: 65000, BFD: &bgp.BFD{}},
	}); err != nil {
		t.Fatal(err)
	}
	sp.SetStatus([]bgp.PeerStatus{
		{
			Name: "mesh-b", Address: b, ASN: 64512, State: bgp.StateEstablished, Uptime: 90 * time.Second,
			Received: 3, Accepted: 2, Rejected: 1, Advertised: 2, RejectedBy: map[string]uint64{bgp.RejectOwnBlock: 1}, Flaps: 2,
		},
		{Name: "tor", Address: tor, ASN: 65000, State: bgp.StateActive, BFD: bgp.BFDDown, Flaps: 5},
	})
	return sp
}

func TestBGPCollector(t *testing.T) {
	golden(t, newBGPCollector(fakeSpeaker(t)), "bgp")
}

func TestBGPCollectorSpeakerDown(t *testing.T) {
	sp := bgptest.New(bgp.Config{ASN: 64512}) // not started: Status fails
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBGPCollector(sp))
	if _, err := reg.Gather(); err == nil {
		t.Error("Gather() with the speaker down succeeded, want the Status error")
	}
}

func TestRoutesCollector(t *testing.T) {
	counts := func() dataplane.Counts {
		return dataplane.Counts{
			Routes: 10, ECMP: 2, Blackholes: 1, Desired: 12, Pending: 1, Conflicts: 1, Stale: 3,
			RoundTrips: 7, Failures: 2, Repairs: 4, NetlinkErrors: 5,
		}
	}
	golden(t, newRoutesCollector(counts), "routes")
}

// TestIPAMCollector: pool p (10.0.0.0/29 in blocks of /30) where n2 holds a
// block with one address and n1 the other, full, and one address borrowed
// from n2's; then GC releases one of n1's.
func TestIPAMCollector(t *testing.T) {
	ctx := t.Context()
	s := ipamtest.NewMemStore()
	p, err := ipam.NewPool("p", netip.MustParsePrefix("10.0.0.0/29"), 30)
	if err != nil {
		t.Fatal(err)
	}
	n1, err := ipam.New(s, ipam.Config{Node: "n1", Pools: []ipam.Pool{p}})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := ipam.New(s, ipam.Config{Node: "n2", Pools: []ipam.Pool{p}})
	if err != nil {
		t.Fatal(err)
	}
	allocate := func(a *ipam.Allocator, handle string) {
		if _, err := a.Allocate(ctx, ipam.Request{Handle: handle}); err != nil {
			t.Fatal(err)
		}
	}
	allocate(n2, "x")
	for _, h := range []string{"a", "b", "c", "d", "e"} {
		allocate(n1, h) // e is borrowed
	}
	if _, err := n1.GC(ctx, []string{"a", "b", "c", "e"}); err != nil {
		t.Fatal(err)
	}
	golden(t, newIPAMCollector(n1), "ipam")
}

func TestAPIInterceptor(t *testing.T) {
	m := New("v1.2.3", nil)
	intercept := m.UnaryInterceptor()
	call := func(method string, err error) {
		_, _ = intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/flatnet.ipam.v1.IPAM/" + method},
			func(context.Context, any) (any, error) { return nil, err })
	}
	call("Allocate", nil)
	call("Allocate", nil)
	call("Allocate", status.Error(codes.ResourceExhausted, "pool exhausted"))
	call("Release", errors.New("not a status"))
	want := `
# HELP flatnet_api_requests_total Calls to the agent's gRPC API (the CNI plugin's Allocate, Release and GC; flatnetctl's Usage, List, Status), by method and gRPC status code.
# TYPE flatnet_api_requests_total counter
flatnet_api_requests_total{code="OK",method="Allocate"} 2
flatnet_api_requests_total{code="ResourceExhausted",method="Allocate"} 1
flatnet_api_requests_total{code="Unknown",method="Release"} 1
`
	if err := testutil.CollectAndCompare(m.apiRequests, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.apiDuration); n != 2 {
		t.Errorf("duration histograms = %d, want 2 (Allocate, Release)", n)
	}
}

// TestLint lints every family the agent's registry serves, with events in
// every instrument: the linter is promtool check metrics' (promlint).
func TestLint(t *testing.T) {
	m := fullMetrics(t)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	names := families(t, m)
	for _, want := range []string{
		"flatnet_build_info", "flatnet_bgp_session_state", "flatnet_bgp_session_flaps_total",
		"flatnet_dataplane_drift_repairs_total", "flatnet_dataplane_reconcile_duration_seconds",
		"flatnet_ipam_node_addresses_used", "flatnet_ipam_operation_duration_seconds",
		"flatnet_api_requests_total", "flatnet_api_request_duration_seconds", "go_goroutines", "process_cpu_seconds_total",
	} {
		if !names[want] {
			t.Errorf("the registry has no %s", want)
		}
	}
}

// families returns the names of the families m's registry serves.
func families(t *testing.T, m *Metrics) map[string]bool {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// flatnetName matches a flatnet family name in PromQL or prose, with a
// histogram's series suffix.
var flatnetName = regexp.MustCompile(`flatnet_[a-z_]+[a-z]`)

// TestDocsAndDashboard: docs/operations.md lists every flatnet family the
// agent serves, and it and the Grafana dashboard name no family the agent
// does not serve.
func TestDocsAndDashboard(t *testing.T) {
	names := families(t, fullMetrics(t))
	known := func(n string) bool {
		for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && names[base] {
				return true
			}
		}
		return false
	}
	docs, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for n := range names {
		if strings.HasPrefix(n, "flatnet_") && !strings.Contains(string(docs), "`"+n+"`") {
			t.Errorf("docs/operations.md does not list %s", n)
		}
	}
	for _, file := range []string{"../docs/operations.md", "../deploy/monitoring/flatnet-dashboard.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range flatnetName.FindAllString(string(data), -1) {
			if !known(n) {
				t.Errorf("%s names %s, which the agent does not serve", file, n)
			}
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	data, err := os.ReadFile("../deploy/monitoring/flatnet-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				exprs++
			}
		}
	}
	if exprs < 15 {
		t.Errorf("the dashboard has %d queries", exprs)
	}
}

// fullMetrics is the agent's registry with every part, and an event in
// every instrument.
func fullMetrics(t *testing.T) *Metrics {
	t.Helper()
	m := New("v1.2.3", nil)
	m.CollectBGP(fakeSpeaker(t))
	m.CollectRoutes(func() dataplane.Counts { return dataplane.Counts{Routes: 1} })
	s := ipamtest.NewMemStore()
	p, err := ipam.NewPool("p", netip.MustParsePrefix("10.0.0.0/24"), 26)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ipam.New(s, ipam.Config{Node: "n1", Pools: []ipam.Pool{p}, Timed: m.IPAMTimed})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(t.Context(), ipam.Request{Handle: "h"}); err != nil {
		t.Fatal(err)
	}
	m.CollectIPAM(a)
	m.DataplanePass(dataplane.Pass{Full: true, Duration: time.Millisecond})
	_, _ = m.UnaryInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Allocate"},
		func(context.Context, any) (any, error) { return nil, nil })
	return m
}
