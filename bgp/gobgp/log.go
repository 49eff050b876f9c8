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

// quieter lowers GoBGP messages that flatnet reports itself, once, to
// debug: GoBGP warns "prefix limit reached" for every UPDATE that comes
// after the limit until the session is down (8 to 23 times per event in the
// lab), and the speaker logs the shutdown once (purgeLimited).
var quieter = map[string]slog.Level{
	"prefix limit reached": slog.LevelDebug,
}

// logHandler routes GoBGP's logs into flatnet's logger: keys renamed to ours
// (the rest lower-cased), the messages in quieter lowered, and the one error
// GoBGP logs on every Stop after a StopBgp dropped.
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
	level := r.Level
	if l, ok := quieter[r.Message]; ok && l < level {
		if level = l; !h.inner.Enabled(ctx, level) {
			return nil
		}
	}
	out := slog.NewRecord(r.Time, level, r.Message, r.PC)
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
