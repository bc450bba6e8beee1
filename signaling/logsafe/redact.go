package logsafe

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// redactHandler keeps SRTP key material out of every log line: an a=crypto
// line or an inline: key in a message, attribute or error (sipgo's errors
// and debug lines can carry whole SIP messages) is masked before the record
// reaches the real handler.
type redactHandler struct{ h slog.Handler }

// Redact wraps log's handler (once) with the key filter.
func Redact(log *slog.Logger) *slog.Logger {
	if _, ok := log.Handler().(redactHandler); ok {
		return log
	}
	return slog.New(redactHandler{log.Handler()})
}

func (r redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, redactString(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{r.h.WithAttrs(red)}
}

func (r redactHandler) WithGroup(name string) slog.Handler { return redactHandler{r.h.WithGroup(name)} }

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); sensitive(s) {
			return slog.String(a.Key, redactString(s))
		}
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = redactAttr(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		case []byte:
			s = string(x)
		default:
			s = fmt.Sprint(x)
		}
		if sensitive(s) {
			return slog.String(a.Key, redactString(s))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

var (
	cryptoLineRe = regexp.MustCompile(`(?i)(a=)?crypto:[^\r\n]*`)
	inlineKeyRe  = regexp.MustCompile(`(?i)inline:[A-Za-z0-9+/=|:^]+`)
)

func sensitive(s string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "inline:") || strings.Contains(l, "crypto:")
}

// redactString masks a=crypto lines and inline keys in s.
func redactString(s string) string {
	if !sensitive(s) {
		return s
	}
	s = cryptoLineRe.ReplaceAllString(s, "${1}crypto:<redacted>")
	return inlineKeyRe.ReplaceAllString(s, "inline:<redacted>")
}
