package signaling

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/prometheus/client_golang/prometheus"
)

// bucket is a token bucket: tokens left, as of last.
type bucket struct {
	tokens float64
	last   time.Time
}

// tokenBuckets is one token bucket per key (a source IP), refilled at rate
// per second up to burst.
type tokenBuckets struct {
	rate, burst float64

	mu sync.Mutex
	m  map[string]*bucket
}

func newTokenBuckets(rate, burst int) *tokenBuckets {
	return &tokenBuckets{rate: float64(rate), burst: float64(max(burst, 1)), m: map[string]*bucket{}}
}

// take takes a token from key's bucket, reporting false when it is empty.
func (b *tokenBuckets) take(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.m[key]
	if k == nil {
		if len(b.m) > 100000 {
			for x, v := range b.m { // forget full buckets: they are as good as new
				if v.tokens+now.Sub(v.last).Seconds()*b.rate >= b.burst {
					delete(b.m, x)
				}
			}
		}
		k = &bucket{tokens: b.burst, last: now}
		b.m[key] = k
	}
	k.tokens = min(b.burst, k.tokens+now.Sub(k.last).Seconds()*b.rate)
	k.last = now
	if k.tokens < 1 {
		return false
	}
	k.tokens--
	return true
}

// sourceLimits throttles out-of-dialog INVITE, OPTIONS and REGISTER per
// source IP on every transport: over a method's rate the source gets 503
// with Retry-After, and over sip.overload_reply_rate of those 503s the
// requests are dropped without an answer. Configured trunks' sources are
// not throttled on SIP transports (REGISTER is browsers' only).
type sourceLimits struct {
	byMethod map[sip.RequestMethod]*tokenBuckets
	replies  *tokenBuckets
	counted  *prometheus.CounterVec
}

func (r *Relay) newSourceLimits() *sourceLimits {
	c := r.cfg.SIP
	return &sourceLimits{
		byMethod: map[sip.RequestMethod]*tokenBuckets{
			sip.INVITE:   newTokenBuckets(c.InviteRate, c.InviteBurst),
			sip.OPTIONS:  newTokenBuckets(c.OptionsRate, c.OptionsBurst),
			sip.REGISTER: newTokenBuckets(c.RegisterRate, c.RegisterBurst),
		},
		replies: newTokenBuckets(c.OverloadReplyRate, 2*c.OverloadReplyRate),
		counted: r.m.NewCounterVec("mediarelay_sip_throttled_total",
			"Out-of-dialog requests over their per-source rate, by method and action (503, dropped).", "method", "action"),
	}
}

// throttled reports whether req was over its source's rate, in which case
// it has been answered with 503 or dropped.
func (r *Relay) throttled(req *sip.Request, tx sip.ServerTransaction) bool {
	b := r.srcLimits.byMethod[req.Method]
	if b == nil {
		return false
	}
	ip := sourceIP(req.Source())
	now := time.Now()
	if req.Method != sip.REGISTER && !isWebSocket(req) && r.isTrunkSource(ip) {
		return false
	}
	if b.take(ip, now) {
		return false
	}
	if r.srcLimits.replies.take(ip, now) {
		r.srcLimits.counted.WithLabelValues(req.Method.String(), "503").Inc()
		retry := max(1, int(1/max(b.rate, 0.001)))
		respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(min(retry, 60))))
		return true
	}
	r.srcLimits.counted.WithLabelValues(req.Method.String(), "dropped").Inc()
	tx.Terminate()
	return true
}

func isWebSocket(req *sip.Request) bool {
	t := req.Transport()
	return strings.EqualFold(t, "ws") || strings.EqualFold(t, "wss")
}

// isTrunkSource reports whether ip is a configured trunk's address or source.
func (r *Relay) isTrunkSource(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, t := range r.routes.Trunks {
		for _, p := range t.SourcePrefixes() {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}
