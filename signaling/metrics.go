package signaling

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/join"
)

// dropCounters caches one counter per drop reason so the packet path does
// a map read under a read lock at most once per reason, then atomics.
type dropCounters struct {
	mu sync.RWMutex
	m  map[string]prometheus.Counter
}

func (r *Relay) countDrop(reason string) {
	r.drops.mu.RLock()
	c := r.drops.m[reason]
	r.drops.mu.RUnlock()
	if c == nil {
		r.drops.mu.Lock()
		if r.drops.m == nil {
			r.drops.m = map[string]prometheus.Counter{}
		}
		if c = r.drops.m[reason]; c == nil {
			c = r.m.PacketsDropped.WithLabelValues(reason)
			r.drops.m[reason] = c
		}
		r.drops.mu.Unlock()
	}
	c.Inc()
}

func (r *Relay) countRequest(req *sip.Request) {
	r.m.SIPRequests.WithLabelValues(req.Method.String()).Inc()
}

func (r *Relay) countSetupFailure(code int) {
	r.m.CallSetupFailures.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (r *Relay) countEnd(cause, trunk string) {
	r.m.CallsTotal.WithLabelValues(cause, trunk).Inc()
}

// countLive brings the packet and byte counters up to date with the legs
// of the calls in progress (metrics.Options.Refresh: at each scrape).
func (r *Relay) countLive() {
	for _, c := range r.callList() {
		c.countMedia()
	}
	for _, j := range r.joins.List() {
		r.countJoinMedia(j)
	}
}

// countJoinMedia adds what the join's legs moved since they were last
// counted. Both are trunk legs: they count as SIP.
func (r *Relay) countJoinMedia(j *join.Join) {
	a, b := j.Moved()
	r.countLegs(media.LegStats{}, a)
	r.countLegs(media.LegStats{}, b)
}

// countMedia adds what the call's legs moved since it was last counted.
func (c *Call) countMedia() {
	if !c.mediaStarted() {
		return
	}
	web, sip := c.webLeg(), c.sipLeg()
	if web == nil || sip == nil {
		return
	}
	c.r.countLegs(c.counted.Moved(web, sip))
}

// mediaStarted says the call's legs exist and forward (startForwarding
// has run), so that its leg accessors may be used from any goroutine.
func (c *Call) mediaStarted() bool {
	m := c.active.Load()
	return m != nil && m.toSIP != nil
}

// countTransports counts how an ended call's legs carried media.
func (r *Relay) countTransports(web, sip string) {
	if web != "" {
		r.m.LegTransports.WithLabelValues(metrics.LegWebRTC, web).Inc()
	}
	if sip != "" {
		r.m.LegTransports.WithLabelValues(metrics.LegSIP, sip).Inc()
	}
}

// countLegs adds packet and byte counts to the relay's counters.
func (r *Relay) countLegs(web, sip media.LegStats) {
	r.m.WebRTC.PacketsIn.Add(float64(web.PacketsIn))
	r.m.WebRTC.PacketsOut.Add(float64(web.PacketsOut))
	r.m.WebRTC.BytesIn.Add(float64(web.BytesIn))
	r.m.WebRTC.BytesOut.Add(float64(web.BytesOut))
	r.m.SIP.PacketsIn.Add(float64(sip.PacketsIn))
	r.m.SIP.PacketsOut.Add(float64(sip.PacketsOut))
	r.m.SIP.BytesIn.Add(float64(sip.BytesIn))
	r.m.SIP.BytesOut.Add(float64(sip.BytesOut))
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
	answered := c.answerTime()
	if answered.IsZero() || c.firstMedia.Load() || !c.mediaStarted() {
		return
	}
	web, sip := c.webLeg(), c.sipLeg()
	if web == nil || sip == nil {
		return
	}
	wf, sf := web.Stats().FirstReceived, sip.Stats().FirstReceived
	if wf.IsZero() || sf.IsZero() || !c.firstMedia.CompareAndSwap(false, true) {
		return
	}
	last := wf
	if sf.After(last) {
		last = sf
	}
	d := max(last.Sub(answered), 0) // early media may precede the answer
	c.r.m.FirstMedia.WithLabelValues(c.trunkName(), c.direction).Observe(d.Seconds())
}

// observeQuality adds the quality of an ended call's legs, as its CDR rec
// has them, to trunk's histograms: first the WebRTC leg (stats web), then
// the SIP leg (sip).
func observeQuality(m *metrics.Relay, trunk string, rec cdr.Record, sip, web media.LegStats) {
	for _, l := range []struct {
		leg, codec string
		loss       float64
		st         media.LegStats
	}{
		{metrics.LegWebRTC, rec.WebRTCCodec, rec.WebRTCLoss, web},
		{metrics.LegSIP, rec.SIPCodec, rec.SIPLoss, sip},
	} {
		m.MOS.WithLabelValues(trunk, l.leg).Observe(cdr.EstimateMOS(l.codec, l.loss, l.st.Jitter, 0))
		m.Loss.WithLabelValues(trunk, l.leg).Observe(l.loss)
		m.Jitter.WithLabelValues(trunk, l.leg).Observe(l.st.Jitter / 1000)
	}
}

// initFailureCounters starts the ICE and DTLS failure counters at zero
// for the causes the relay knows.
func (r *Relay) initFailureCounters() {
	for _, cause := range []string{media.FailICETimeout, media.FailICEConsent, media.FailICETCPLost} {
		r.m.ICEFailures.WithLabelValues(cause)
	}
	for _, cause := range []string{media.FailDTLSSetup, media.FailDTLSTimeout, media.FailDTLS, media.FailSRTPKeys} {
		r.m.DTLSFailures.WithLabelValues(metrics.LegWebRTC, cause)
	}
	for _, cause := range []string{media.FailDTLS, media.FailSRTPKeys} {
		r.m.DTLSFailures.WithLabelValues(metrics.LegSIP, cause)
	}
}

// countLegFailure counts a WebRTC leg's failure as an ICE or a DTLS one.
func (r *Relay) countLegFailure(cause string) {
	switch {
	case cause == "" || cause == media.FailClosed:
	case strings.HasPrefix(cause, "ice_"):
		r.m.ICEFailures.WithLabelValues(cause).Inc()
	default:
		r.m.DTLSFailures.WithLabelValues(metrics.LegWebRTC, cause).Inc()
	}
}

// activeCalls counts the calls in progress by trunk and media mode, for
// mediarelay_calls_active and mediarelay_trunk_calls_active.
func (r *Relay) activeCalls() []metrics.ActiveCalls {
	type key struct{ trunk, mode string }
	n := map[key]int{}
	for _, c := range r.callList() {
		mode := "pending"
		if m := c.active.Load(); m != nil {
			mode = m.plan.Mode
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

// mediaLoops is metrics.Relay.MediaLoops' source.
func mediaLoops() (busy []time.Duration, sockets []int) {
	for _, st := range media.Loops() {
		busy = append(busy, st.Busy)
		sockets = append(sockets, st.Sockets)
	}
	return busy, sockets
}
