package signaling

import (
	"strconv"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/metrics"
)

// dropCounters caches one counter per drop reason so the packet path does
// a map read under a read lock at most once per reason, then atomics.
type dropCounters struct {
	mu sync.RWMutex
	m  map[string]*metrics.Counter
}

func (r *Relay) countDrop(reason string) {
	r.drops.mu.RLock()
	c := r.drops.m[reason]
	r.drops.mu.RUnlock()
	if c == nil {
		r.drops.mu.Lock()
		if r.drops.m == nil {
			r.drops.m = map[string]*metrics.Counter{}
		}
		if c = r.drops.m[reason]; c == nil {
			c = r.m.PacketsDropped.With(reason)
			r.drops.m[reason] = c
		}
		r.drops.mu.Unlock()
	}
	c.Inc()
}

func (r *Relay) countRequest(req *sip.Request) {
	r.m.SIPRequests.With(req.Method.String()).Inc()
}

func (r *Relay) countSetupFailure(code int) {
	r.m.CallSetupFailures.With(strconv.Itoa(code)).Inc()
}

func (r *Relay) countEnd(cause string) {
	r.m.CallsTotal.With(cause).Inc()
}

// legCounts is what of a call's leg statistics is already in the relay's
// packet and byte counters, per leg: the legs keep their own counts (the
// packet path touches no shared counter) and the relay adds what is new
// at each scrape and at the call's end.
type legCounts struct {
	mu       sync.Mutex
	web, sip any // the legs counted; a transfer may swap one in
	ws, rs   media.LegStats
}

// countLive brings the packet and byte counters up to date with the legs
// of the calls in progress (Registry.BeforeScrape).
func (r *Relay) countLive() {
	for _, c := range r.callList() {
		c.countMedia()
	}
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
	ws, rs := web.Stats(), sip.Stats()
	n := &c.counted
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.web != any(web) {
		n.web, n.ws = web, media.LegStats{}
	}
	if n.sip != any(sip) {
		n.sip, n.rs = sip, media.LegStats{}
	}
	c.r.countLegs(since(ws, n.ws), since(rs, n.rs))
	n.ws, n.rs = ws, rs
}

// mediaStarted says the call's legs exist and forward (startForwarding
// has run), so that its leg accessors may be used from any goroutine.
func (c *Call) mediaStarted() bool {
	m := c.active.Load()
	return m != nil && m.toSIP != nil
}

// since is cur minus what was counted before, per counter.
func since(cur, before media.LegStats) media.LegStats {
	d := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return media.LegStats{
		PacketsIn: d(cur.PacketsIn, before.PacketsIn), PacketsOut: d(cur.PacketsOut, before.PacketsOut),
		BytesIn: d(cur.BytesIn, before.BytesIn), BytesOut: d(cur.BytesOut, before.BytesOut),
	}
}

// countLegs adds packet and byte counts to the relay's counters.
func (r *Relay) countLegs(web, sip media.LegStats) {
	r.m.WebRTC.PacketsIn.Add(web.PacketsIn)
	r.m.WebRTC.PacketsOut.Add(web.PacketsOut)
	r.m.WebRTC.BytesIn.Add(web.BytesIn)
	r.m.WebRTC.BytesOut.Add(web.BytesOut)
	r.m.SIP.PacketsIn.Add(sip.PacketsIn)
	r.m.SIP.PacketsOut.Add(sip.PacketsOut)
	r.m.SIP.BytesIn.Add(sip.BytesIn)
	r.m.SIP.BytesOut.Add(sip.BytesOut)
}
