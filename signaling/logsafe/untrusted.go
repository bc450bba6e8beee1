// Package logsafe decides what of the relay's logs may carry: nothing
// that a peer on the Internet can use to flood them (sipgo's records about
// unparsable or misbehaving input are demoted to debug and bounded), and
// no SRTP key material (a=crypto lines and inline: keys are masked).
package logsafe

import (
	"context"
	"log/slog"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// MaxLoggedInput bounds how much of a peer's bytes one log attribute carries.
const MaxLoggedInput = 256

// sipgo messages that carry what a peer sent (an unparsable message, whole)
// or that report its misbehaviour: logged at debug level and bounded, so
// nobody can fill the relay's logs at error level from the Internet.
var untrustedMessages = map[string]bool{
	"failed to parse":   true,
	"Read filter error": true,
	"Fail to upgrade":   true,
	"Got TCP error":     true,
	"Read error":        true,
}

// sipgo's connection reference counting warns when a connection it already
// closed hard (at shutdown, or one the relay reaped) is released again by
// its reader: bookkeeping, not a fault, so it goes to debug.
var refMessages = map[string]bool{
	"WS ref went negative":               true,
	"TCP ref went negative":              true,
	"UDP ref went negative on try close": true,
}

// untrustedHandler demotes and bounds sipgo's records about peers' input.
type untrustedHandler struct{ h slog.Handler }

func (u untrustedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Error and warn records may be demoted: let them through to Handle.
	return l >= slog.LevelWarn || u.h.Enabled(ctx, l)
}

func (u untrustedHandler) Handle(ctx context.Context, rec slog.Record) error {
	untrusted, ref := untrustedMessages[rec.Message], refMessages[rec.Message]
	if !untrusted && !ref {
		if !u.h.Enabled(ctx, rec.Level) {
			return nil
		}
		return u.h.Handle(ctx, rec)
	}
	if !u.h.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	out := slog.NewRecord(rec.Time, slog.LevelDebug, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		if v := a.Value.Resolve(); v.Kind() == slog.KindString || v.Kind() == slog.KindAny {
			a = slog.String(a.Key, Truncate(v.String(), MaxLoggedInput))
		}
		out.AddAttrs(a)
		return true
	})
	return u.h.Handle(ctx, out)
}

func (u untrustedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return untrustedHandler{u.h.WithAttrs(as)}
}

func (u untrustedHandler) WithGroup(name string) slog.Handler {
	return untrustedHandler{u.h.WithGroup(name)}
}

// Untrusted wraps log for sipgo: its records about what peers sent go to
// debug, bounded.
func Untrusted(log *slog.Logger) *slog.Logger {
	return slog.New(untrustedHandler{log.Handler()})
}

// defaultHandler passes records to whatever slog.Default is at the time,
// so the sip package's one global logger follows the process's logging.
type defaultHandler struct{}

func (defaultHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return slog.Default().Handler().Enabled(ctx, l)
}
func (defaultHandler) Handle(ctx context.Context, r slog.Record) error {
	return slog.Default().Handler().Handle(ctx, r)
}
func (d defaultHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return slog.Default().Handler().WithAttrs(as)
}
func (d defaultHandler) WithGroup(name string) slog.Handler {
	return slog.Default().Handler().WithGroup(name)
}

var sipDefaultLogger sync.Once

// BoundSIPDefaultLogger routes the sip package's global logger (connection
// bookkeeping) through the same filters, once per process.
func BoundSIPDefaultLogger() {
	sipDefaultLogger.Do(func() {
		sip.SetDefaultLogger(slog.New(untrustedHandler{redactHandler{defaultHandler{}}}))
	})
}

// Truncate bounds untrusted text for a log line.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
