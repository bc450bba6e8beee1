// Package throttle limits how fast requests and calls may come: token
// buckets per key; per source IP, the rate of out-of-dialog INVITE,
// OPTIONS and REGISTER (over it, 503 with Retry-After, and over
// sip.overload_reply_rate of those, silence); per browser user, the calls
// in progress (sip.user_max_calls) and call attempts per minute
// (sip.user_call_rate). Who is exempt (a configured trunk) is the relay's
// to say. SourceIP is what "a source" means here and to the rest of
// signaling (the registrar's lockouts, trunks known by address).
package throttle

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
)

// maxKeys bounds the keys a Buckets remembers before it forgets the full
// buckets, which are as good as new.
const maxKeys = 100000

// bucket is a token bucket: tokens left, as of last.
type bucket struct {
	tokens float64
	last   time.Time
}

// Buckets is one token bucket per key (a source IP, a user), refilled at
// rate per second up to burst.
type Buckets struct {
	rate, burst float64

	mu sync.Mutex
	m  map[string]*bucket
}

// NewBuckets returns buckets refilled at rate tokens per second up to
// burst (at least 1).
func NewBuckets(rate, burst float64) *Buckets {
	return &Buckets{rate: rate, burst: max(burst, 1), m: map[string]*bucket{}}
}

// Take takes a token from key's bucket, reporting false when it is empty.
func (b *Buckets) Take(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.m[key]
	if k == nil {
		if len(b.m) > maxKeys {
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

// Sources throttles out-of-dialog INVITE, OPTIONS and REGISTER per
// source IP on every transport: over a method's rate the source gets 503
// with Retry-After, and over sip.overload_reply_rate of those 503s the
// requests are dropped without an answer.
type Sources struct {
	byMethod map[sip.RequestMethod]*Buckets
	replies  *Buckets
	counted  *prometheus.CounterVec
}

// NewSources returns the per-source limits of cfg, counting what it
// throttles in m (mediarelay_sip_throttled_total).
func NewSources(cfg config.SIP, m *metrics.Relay) *Sources {
	return &Sources{
		byMethod: map[sip.RequestMethod]*Buckets{
			sip.INVITE:   NewBuckets(float64(cfg.InviteRate), float64(cfg.InviteBurst)),
			sip.OPTIONS:  NewBuckets(float64(cfg.OptionsRate), float64(cfg.OptionsBurst)),
			sip.REGISTER: NewBuckets(float64(cfg.RegisterRate), float64(cfg.RegisterBurst)),
		},
		replies: NewBuckets(float64(cfg.OverloadReplyRate), float64(2*cfg.OverloadReplyRate)),
		counted: m.NewCounterVec("mediarelay_sip_throttled_total",
			"Out-of-dialog requests over their per-source rate, by method and action (503, dropped).", "method", "action"),
	}
}

// Throttled reports whether req was over its source's rate, in which case
// it has been answered with 503 or dropped. A source trunk reports as a
// configured trunk's is not throttled on SIP transports (REGISTER, which
// is browsers' only, always is).
func (s *Sources) Throttled(req *sip.Request, tx sip.ServerTransaction, trunk func(ip string) bool) bool {
	b := s.byMethod[req.Method]
	if b == nil {
		return false
	}
	ip := SourceIP(req.Source())
	now := time.Now()
	if req.Method != sip.REGISTER && !isWebSocket(req) && trunk(ip) {
		return false
	}
	if b.Take(ip, now) {
		return false
	}
	if s.replies.Take(ip, now) {
		s.counted.WithLabelValues(req.Method.String(), "503").Inc()
		retry := max(1, int(1/max(b.rate, 0.001)))
		res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(min(retry, 60))))
		_ = tx.Respond(res)
		return true
	}
	s.counted.WithLabelValues(req.Method.String(), "dropped").Inc()
	tx.Terminate()
	return true
}

func isWebSocket(req *sip.Request) bool {
	t := req.Transport()
	return strings.EqualFold(t, "ws") || strings.EqualFold(t, "wss")
}

// SourceIP is the IP address of a request's source (sip.Request.Source,
// host:port): the key of per-source rates here, and of the registrar's
// lockouts and the relay's trunk-by-address lookup, so that a source is
// one thing whichever limit it meets. A source without a port is returned
// as is.
func SourceIP(src string) string {
	h, _, err := net.SplitHostPort(src)
	if err != nil {
		return src
	}
	return h
}

// Users enforces sip.user_max_calls and sip.user_call_rate for
// authenticated browser users.
type Users struct {
	maxCalls int
	attempts *Buckets // nil: no rate; else perMin per minute, burst perMin

	mu     sync.Mutex
	active map[string]int
}

// NewUsers returns limits of maxCalls calls in progress and perMin call
// attempts a minute per user; 0 means no limit.
func NewUsers(maxCalls, perMin int) *Users {
	u := &Users{maxCalls: maxCalls, active: map[string]int{}}
	if perMin > 0 {
		u.attempts = NewBuckets(float64(perMin)/60, float64(perMin))
	}
	return u
}

// MaxCalls is sip.user_max_calls (0: no cap).
func (l *Users) MaxCalls() int { return l.maxCalls }

// Attempt takes one call attempt from user's allowance.
func (l *Users) Attempt(user string, now time.Time) bool {
	if l.attempts == nil {
		return true
	}
	return l.attempts.Take(user, now)
}

// Acquire counts a call of user, or reports false when user is at the cap.
func (l *Users) Acquire(user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxCalls > 0 && l.active[user] >= l.maxCalls {
		return false
	}
	l.active[user]++
	return true
}

// Release ends a call Acquire counted.
func (l *Users) Release(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[user] <= 1 {
		delete(l.active, user)
		return
	}
	l.active[user]--
}
