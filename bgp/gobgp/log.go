package gobgp

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
)

// gobgpKeys renames GoBGP's log keys to the ones flatnet logs with.
var gobgpKeys = map[string]string{
	"Key":    "peer", // GoBGP's per-peer loggers carry the neighbour address as "Key"
	"Peer":   "peer",
	"Error":  "err",
	"Err":    "err",
	"Prefix": "prefix",
}

// logHandler routes GoBGP's logs into flatnet's logger: keys renamed to ours
// (the rest lower-cased), and the one error GoBGP logs on every Stop after a
// StopBgp dropped.
type logHandler struct {
	inner    slog.Handler
	stopping *atomic.Bool
}

func newLogHandler(inner slog.Handler) *logHandler {
	return &logHandler{inner: inner, stopping: new(atomic.Bool)}
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	// BgpServer.Stop calls StopBgp, which fails once we have called it
	// ourselves with the graceful-restart flag Stop cannot pass.
	if h.stopping.Load() && r.Message == "failed to stop BGP server" {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(renameAttr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	renamed := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		renamed[i] = renameAttr(a)
	}
	return &logHandler{inner: h.inner.WithAttrs(renamed), stopping: h.stopping}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{inner: h.inner.WithGroup(name), stopping: h.stopping}
}

func renameAttr(a slog.Attr) slog.Attr {
	if k, ok := gobgpKeys[a.Key]; ok {
		a.Key = k
	} else {
		a.Key = strings.ToLower(a.Key)
	}
	return a
}
