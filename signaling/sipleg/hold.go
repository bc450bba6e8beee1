package sipleg

import (
	"sync/atomic"
	"time"

	"github.com/mediarelay/mediarelay/media"
)

// Hold is whether a call or join is on hold: either of its legs asked for
// a direction other than sendrecv. The media timeout does not count while
// held, and counts from the last resume after.
type Hold struct {
	held    atomic.Bool
	resumed atomic.Int64 // unix ns of the last resume
}

// Update sets the hold flag from the legs' directions (nil legs are
// skipped).
func (h *Hold) Update(legs ...*Leg) {
	held := false
	for _, l := range legs {
		if l != nil && l.AskedDir() != "sendrecv" {
			held = true
		}
	}
	if h.held.Swap(held) && !held {
		h.resumed.Store(time.Now().UnixNano())
	}
}

// since is when the media timeout starts counting: base (the answer), or
// the last resume from hold if later.
func (h *Hold) since(base time.Time) time.Time {
	if ns := h.resumed.Load(); ns != 0 {
		if t := time.Unix(0, ns); t.After(base) {
			return t
		}
	}
	return base
}

// Silent says whether a call or join answered at start has had no media
// on a leg for longer than timeout (0: no limit), counting from start or
// the last resume from hold; never while on hold.
func (h *Hold) Silent(now, start time.Time, timeout time.Duration, legs ...media.StatsSource) bool {
	if timeout <= 0 || h.held.Load() {
		return false
	}
	base := h.since(start)
	for _, l := range legs {
		since := base
		if lr := l.Stats().LastReceived; lr.After(since) {
			since = lr
		}
		if now.Sub(since) > timeout {
			return true
		}
	}
	return false
}
