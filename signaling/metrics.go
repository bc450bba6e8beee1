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

// countLegs adds an ended call's packet counts. Counting at the end keeps
// the packet path free of shared counters.
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
