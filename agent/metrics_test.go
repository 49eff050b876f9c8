package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// scrape GETs /metrics at addr, asking for accept, and returns the body and
// its content type.
func scrape(t *testing.T, addr, accept string) ([]byte, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	return body, resp.Header.Get("Content-Type")
}

// value returns the value of the series of family name whose labels include
// labels (name=value pairs), and whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsEndpoint scrapes a real agent's /metrics after a known sequence
// of calls through its socket, as the CNI plugin makes them.
func TestMetricsEndpoint(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	cfg := testConfig(t) // tiny-v4: 10.10.0.0/30 in /31 blocks; v6: fd00:10::/120 in /122; strict affinity
	c := ipampb.NewIPAMClient(startAgent(t, cfg, env{health: lis}, slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	for _, h := range []string{"c1/eth0", "c2/eth0"} {
		if _, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Release(ctx, &ipampb.ReleaseRequest{Handle: "c1/eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GC(ctx, &ipampb.GCRequest{ValidHandles: []string{"c9/eth0"}}); err != nil { // c2 goes
		t.Fatal(err)
	}
	if _, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: "c3/eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: ""}); err == nil {
		t.Fatal("Allocate with no handle succeeded")
	}

	body, ctype := scrape(t, addr, "text/plain")
	if !strings.HasPrefix(ctype, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ctype)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"flatnet_build_info", []string{"version", "dev"}, 1},
		{"flatnet_api_requests_total", []string{"method", "Allocate", "code", "OK"}, 3},
		{"flatnet_api_requests_total", []string{"method", "Allocate", "code", "InvalidArgument"}, 1},
		{"flatnet_api_requests_total", []string{"method", "Release", "code", "OK"}, 1},
		{"flatnet_api_requests_total", []string{"method", "GC", "code", "OK"}, 1},
		{"flatnet_api_requests_total", []string{"method", "Usage", "code", "OK"}, 0}, // never called, but there
		{"flatnet_api_request_duration_seconds", []string{"method", "Allocate"}, 4},
		{"flatnet_ipam_operation_duration_seconds", []string{"operation", "allocate"}, 4}, // the bad request too: the allocator refused it
		{"flatnet_ipam_operation_duration_seconds", []string{"operation", "release"}, 1},
		{"flatnet_ipam_operation_duration_seconds", []string{"operation", "gc"}, 1},
		{"flatnet_ipam_gc_released_addresses_total", nil, 2}, // c2's two addresses
		{"flatnet_ipam_node_addresses_used", []string{"pool", "tiny-v4"}, 1},
		{"flatnet_ipam_node_addresses_used", []string{"pool", "v6"}, 1},
		{"flatnet_ipam_node_blocks", []string{"pool", "tiny-v4"}, 1},
		{"flatnet_ipam_node_addresses_free", []string{"pool", "tiny-v4"}, 1},
		{"flatnet_ipam_node_addresses_free", []string{"pool", "v6"}, 63},
		{"flatnet_ipam_pool_addresses", []string{"pool", "v6"}, 256},
		{"flatnet_ipam_pool_blocks", []string{"pool", "tiny-v4"}, 2},
		{"flatnet_ipam_exhausted", []string{"family", "ipv4"}, 0},
	} {
		got, ok := value(mfs, c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := mfs["flatnet_bgp_session_state"]; ok {
		t.Error("BGP is off, yet its sessions are reported")
	}
	// promtool check metrics runs this linter over a scrape.
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	body, ctype = scrape(t, addr, "application/openmetrics-text; version=1.0.0")
	if !strings.HasPrefix(ctype, "application/openmetrics-text") || !bytes.HasSuffix(body, []byte("# EOF\n")) {
		t.Errorf("OpenMetrics scrape: Content-Type %q, ends with %q", ctype, body[max(0, len(body)-20):])
	}
}
