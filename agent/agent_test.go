package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

func testConfig(t testing.TB) config.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.NodeName = "node1"
	cfg.API.Socket = filepath.Join(dir, "flatnet.sock")
	cfg.Datastore.File.Dir = filepath.Join(dir, "store")
	cfg.Health.Address = "" // tests run side by side; TestHealth serves it
	cfg.IPAM.StrictAffinity = true
	cfg.IPAM.Pools = []config.Pool{
		{Name: "tiny-v4", CIDR: netip.MustParsePrefix("10.10.0.0/30"), BlockSize: 31},
		{Name: "v6", CIDR: netip.MustParsePrefix("fd00:10::/120"), BlockSize: 122},
	}
	return cfg
}

// start runs the agent until the test ends and returns a client on its socket.
func start(t testing.TB, cfg config.Config) ipampb.IPAMClient {
	t.Helper()
	return ipampb.NewIPAMClient(startAgent(t, cfg, env{}, slog.New(slog.NewTextHandler(io.Discard, nil))))
}

// startAgent runs the agent, with its kernel routes in netns (nil: this
// process's namespace), until the test ends and returns a connection to its
// socket.
func startAgent(t testing.TB, cfg config.Config, e env, log *slog.Logger) grpc.ClientConnInterface {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, e, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent stopped with: %v", err)
		}
	})
	waitForSocket(t, cfg.API.Socket, done)
	c, err := agentclient.Dial(cfg.API.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.Conn()
}

// logBuffer keeps what the agent logs, for the test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// logTo returns a logger into a new buffer, shown if t fails.
func logTo(t testing.TB) (*slog.Logger, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func waitForSocket(t testing.TB, path string, done <-chan error) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("agent exited before serving: %v", err)
		default:
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("agent did not serve on %s", path)
}

func wantCode(t *testing.T, what string, err error, code codes.Code, text string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), text) {
		t.Errorf("%s: got %v, want %s containing %q", what, err, code, text)
	}
}

func TestIPAMOverTheSocket(t *testing.T) {
	cfg := testConfig(t)
	c := start(t, cfg)
	ctx := t.Context()
	v4 := []ipampb.Family{ipampb.Family_FAMILY_IPV4}

	got, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: "c1/eth0", Attrs: &ipampb.Attributes{Namespace: "default", Pod: "web-0"}})
	if err != nil {
		t.Fatal(err)
	}
	want := &ipampb.AllocateResponse{Addresses: []*ipampb.Address{
		{Address: "10.10.0.0/32", Gateway: "169.254.1.1", Family: ipampb.Family_FAMILY_IPV4, Block: "10.10.0.0/31", Pool: "tiny-v4"},
		{Address: "fd00:10::/128", Gateway: "fe80::1", Family: ipampb.Family_FAMILY_IPV6, Block: "fd00:10::/122", Pool: "v6"},
	}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("dual-stack Allocate (-want +got):\n%s", diff)
	}
	again, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: "c1/eth0"})
	if diff := cmp.Diff(want, again, protocmp.Transform()); err != nil || diff != "" {
		t.Errorf("Allocate with the same handle (-want +got): %v\n%s", err, diff)
	}

	for _, h := range []string{"c2/eth0", "c3/eth0", "c4/eth0"} {
		if _, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: h, Families: v4}); err != nil {
			t.Fatalf("Allocate(%s): %v", h, err)
		}
	}
	_, err = c.Allocate(ctx, &ipampb.AllocateRequest{Handle: "c5/eth0", Families: v4})
	wantCode(t, "Allocate from a full pool", err, codes.ResourceExhausted, "pool exhausted: no free address in pools tiny-v4 (10.10.0.0/30)")

	rel, err := c.Release(ctx, &ipampb.ReleaseRequest{Handle: "c2/eth0"})
	if err != nil || !slices.Equal(rel.GetReleased(), []string{"10.10.0.1"}) {
		t.Errorf("Release(c2) = %v, %v; want [10.10.0.1]", rel, err)
	}
	if rel, err := c.Release(ctx, &ipampb.ReleaseRequest{Handle: "never-seen/eth0"}); err != nil || len(rel.GetReleased()) != 0 {
		t.Errorf("Release(unknown) = %v, %v; want nothing and no error", rel, err)
	}
	got5, err := c.Allocate(ctx, &ipampb.AllocateRequest{Handle: "c5/eth0", Families: v4})
	if err != nil || got5.GetAddresses()[0].GetAddress() != "10.10.0.1/32" {
		t.Errorf("Allocate after a release = %v, %v; want the released 10.10.0.1", got5, err)
	}

	gc, err := c.GC(ctx, &ipampb.GCRequest{ValidHandles: []string{"c1/eth0", "c5/eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	for _, a := range gc.GetReleased() {
		gone = append(gone, a.GetHandle()+"="+a.GetAddress())
	}
	slices.Sort(gone)
	if diff := cmp.Diff([]string{"c3/eth0=10.10.0.2", "c4/eth0=10.10.0.3"}, gone); diff != "" {
		t.Errorf("GC released (-want +got):\n%s", diff)
	}

	list, err := c.List(ctx, &ipampb.ListRequest{})
	if err != nil || len(list.GetAllocations()) != 3 {
		t.Errorf("List = %d allocations, %v; want 3 (c1 twice, c5)", len(list.GetAllocations()), err)
	}
	usage, err := c.Usage(ctx, &ipampb.UsageRequest{})
	if err != nil || usage.GetNode() != "node1" || len(usage.GetPools()) != 2 || usage.GetPools()[1].GetBlockBits() != 2 {
		t.Errorf("Usage = %v, %v", usage, err)
	}
}

func TestMalformedRequests(t *testing.T) {
	c := start(t, testConfig(t))
	ctx := t.Context()
	for name, req := range map[string]*ipampb.AllocateRequest{
		"no handle":       {},
		"space in handle": {Handle: "c1 eth0"},
		"long handle":     {Handle: strings.Repeat("a", 600)},
		"unknown family":  {Handle: "c1/eth0", Families: []ipampb.Family{5}},
		"unspecified":     {Handle: "c1/eth0", Families: []ipampb.Family{ipampb.Family_FAMILY_UNSPECIFIED}},
		"family twice":    {Handle: "c1/eth0", Families: []ipampb.Family{ipampb.Family_FAMILY_IPV6, ipampb.Family_FAMILY_IPV6}},
		"long namespace":  {Handle: "c1/eth0", Attrs: &ipampb.Attributes{Namespace: strings.Repeat("n", 64), Pod: "p"}},
		"1 MiB pod name":  {Handle: "c1/eth0", Attrs: &ipampb.Attributes{Namespace: "ns", Pod: strings.Repeat("p", 1<<20)}},
	} {
		_, err := c.Allocate(ctx, req)
		wantCode(t, name, err, codes.InvalidArgument, "")
	}
	_, err := c.Release(ctx, &ipampb.ReleaseRequest{})
	wantCode(t, "Release without handle", err, codes.InvalidArgument, "empty handle")
	_, err = c.GC(ctx, &ipampb.GCRequest{ValidHandles: []string{"c1/eth0", ""}})
	wantCode(t, "GC with an empty handle", err, codes.InvalidArgument, "valid_handles[1]")
	if list, err := c.List(ctx, &ipampb.ListRequest{}); err != nil || len(list.GetAllocations()) != 0 {
		t.Errorf("malformed requests allocated: %v, %v", list, err)
	}
}

func TestSocket(t *testing.T) {
	cfg := testConfig(t)
	// A socket left behind by a dead agent is replaced.
	stale, err := net.Listen("unix", cfg.API.Socket)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	start(t, cfg)
	fi, err := os.Stat(cfg.API.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	// A second agent on the same socket refuses to start and leaves the first alone.
	err = Run(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "another agent is serving") {
		t.Errorf("second agent on a live socket: %v", err)
	}
	if _, err := os.Stat(cfg.API.Socket); err != nil {
		t.Errorf("first agent's socket gone: %v", err)
	}
}

func TestSocketPathIsNotASocket(t *testing.T) {
	cfg := testConfig(t)
	if err := os.WriteFile(cfg.API.Socket, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Run(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Run over a regular file = %v", err)
	}
	if b, _ := os.ReadFile(cfg.API.Socket); string(b) != "precious" {
		t.Error("the agent overwrote a file that was not its socket")
	}
}

func TestUnreachableAgentIsUnavailable(t *testing.T) {
	c, err := agentclient.Dial(filepath.Join(t.TempDir(), "nobody.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.IPAM.Allocate(t.Context(), &ipampb.AllocateRequest{Handle: "c1/eth0"})
	wantCode(t, "Allocate with no agent", err, codes.Unavailable, "")
}
