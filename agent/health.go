package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// health serves /healthz (the agent process answers) and /readyz (every part
// has started: datastore synced, BGP started, API serving) for the
// DaemonSet's probes, and /metrics for Prometheus.
type health struct {
	mu    sync.Mutex
	ready map[string]bool
}

// healthParts are what /readyz waits for.
var healthParts = []string{"datastore", "bgp", "api"}

func newHealth() *health { return &health{ready: map[string]bool{}} }

func (h *health) set(part string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready[part] = ok
}

func (h *health) notReady() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(healthParts), func(p string) bool { return h.ready[p] })
}

// serve serves on lis until ctx is done, with the agent's metrics as
// /metrics, and returns when it has stopped. A failure is logged: the
// probes report it.
func (h *health) serve(ctx context.Context, lis net.Listener, metrics http.Handler, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if missing := h.notReady(); len(missing) > 0 {
			http.Error(w, "not ready: "+strings.Join(missing, ", "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	var err error
	select {
	case <-ctx.Done():
		_ = srv.Close()
		err = <-served
	case err = <-served:
	}
	if !errors.Is(err, http.ErrServerClosed) {
		log.Error("health server", "err", err)
	}
}
