package journal

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Handler is a log/slog handler that sends baton's own events to journald
// as structured entries: MESSAGE is the event with its attributes as text
// (what journalctl shows), BATON_EVENT the bare event, and each attribute a
// field of its own. The worker attributes use the same fields as worker
// lines (slot: BATON_WORKER, gen: BATON_GENERATION, pid: BATON_WORKER_PID),
// so `journalctl -u myapp BATON_WORKER=1` shows a slot's lines and events.
type Handler struct {
	w      *Writer
	level  slog.Leveler
	attrs  []slog.Attr
	prefix string // of grouped attribute keys
}

// NewHandler returns a Handler sending to w the records at level or above.
func NewHandler(w *Writer, level slog.Leveler) *Handler {
	return &Handler{w: w, level: level}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var text strings.Builder
	text.WriteString(r.Message)
	fields := []Field{
		{"PRIORITY", priority(r.Level)},
		{"SYSLOG_IDENTIFIER", "baton"},
		{"BATON_EVENT", r.Message},
	}
	add := func(a slog.Attr) {
		a.Value = a.Value.Resolve()
		if a.Equal(slog.Attr{}) {
			return
		}
		key := h.prefix + a.Key
		v := a.Value.String()
		fmt.Fprintf(&text, " %s=%s", key, quoteIfNeeded(v))
		fields = append(fields, Field{fieldName(key), v})
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	fields = append(fields, Field{"MESSAGE", text.String()})
	return h.w.TrySend(fields)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		h2.attrs = append(append([]slog.Attr{}, h2.attrs...), a)
	}
	return &h2
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "3"
	case l >= slog.LevelWarn:
		return "4"
	case l >= slog.LevelInfo:
		return "6"
	}
	return "7"
}

// fieldName maps an attribute key to a journal field name.
func fieldName(key string) string {
	switch key {
	case "slot":
		return "BATON_WORKER"
	case "gen":
		return "BATON_GENERATION"
	case "pid":
		return "BATON_WORKER_PID"
	}
	var b strings.Builder
	b.WriteString("BATON_")
	for _, c := range strings.ToUpper(key) {
		if c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func quoteIfNeeded(v string) string {
	if v == "" || strings.ContainsAny(v, " \"=\n") {
		return fmt.Sprintf("%q", v)
	}
	return v
}
