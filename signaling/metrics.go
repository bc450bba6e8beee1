package signaling

import (
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/callmetrics"
	"github.com/mediarelay/mediarelay/signaling/join"
)

// countLive brings the packet and byte counters up to date with the legs
// of the calls in progress (metrics.Options.Refresh: at each scrape).
func (r *Relay) countLive() {
	for _, c := range r.calls.List() {
		r.m.CountLegs(c.media.Moved())
	}
	for _, j := range r.joins.List() {
		countJoinMedia(r.m, j)
	}
}

// countJoinMedia adds to m what the join's legs moved since they were
// last counted. Both are trunk legs: they count as SIP.
func countJoinMedia(m *callmetrics.Counters, j *join.Join) {
	a, b := j.Moved()
	m.CountLegs(media.LegStats{}, a)
	m.CountLegs(media.LegStats{}, b)
}

// trunkName is the trunk label of the call's metrics.
func (c *Call) trunkName() string {
	if c.route == nil {
		return ""
	}
	return c.route.Name
}

// markAnswered records the answer time and the set-up time.
func (c *Call) markAnswered() {
	now := time.Now()
	c.answered.Store(&now)
	c.r.m.CallSetup.WithLabelValues(c.trunkName(), c.direction).Observe(now.Sub(c.start).Seconds())
}

// answerTime is when the call was answered, zero before; safe from any goroutine.
func (c *Call) answerTime() time.Time {
	if t := c.answered.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// observeFirstMedia observes, once, the time from answer to the first
// packet received on the later of the two legs, when both have received.
func (c *Call) observeFirstMedia() {
	d, ok := c.media.FirstMedia(c.answerTime())
	if !ok {
		return
	}
	c.r.m.FirstMedia.WithLabelValues(c.trunkName(), c.direction).Observe(d.Seconds())
}

// activeCalls counts the calls in progress by trunk and media mode, for
// mediarelay_calls_active and mediarelay_trunk_calls_active.
func (r *Relay) activeCalls() []metrics.ActiveCalls {
	type key struct{ trunk, mode string }
	n := map[key]int{}
	for _, c := range r.calls.List() {
		mode := "pending"
		if c.media.Settled() {
			mode = c.media.Plan().Mode
		}
		n[key{c.trunkName(), mode}]++
	}
	for _, j := range r.joins.List() {
		n[key{j.Trunk(), "join"}]++
	}
	out := make([]metrics.ActiveCalls, 0, len(n))
	for k, v := range n {
		out = append(out, metrics.ActiveCalls{Trunk: k.trunk, Mode: k.mode, N: v})
	}
	return out
}
