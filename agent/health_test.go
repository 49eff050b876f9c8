package agent

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	// The agent serves on a listener the test holds: no port to find free.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	cfg := testConfig(t)
	startAgent(t, cfg, env{health: lis}, slog.New(slog.DiscardHandler)) // returns once the API serves: every part is up
	for _, path := range []string{"/healthz", "/readyz"} {
		// The socket accepts a moment before the agent calls itself ready.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
			}
		}
	}

	h := newHealth()
	h.set("datastore", true)
	if got := h.notReady(); strings.Join(got, ",") != "bgp,api" {
		t.Errorf("not ready: %v, want bgp and api", got)
	}
}
