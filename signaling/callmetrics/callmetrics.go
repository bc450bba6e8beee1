// Package callmetrics owns what the relay counts of its SIP requests,
// calls and media legs: the Prometheus counters and histograms of
// pkg/metrics, fed from the events of a call (a request received, a set-up
// that failed, a call that ended, packets dropped or moved, a WebRTC leg
// that failed, the quality of an ended call's legs). It knows nothing of
// the relay's calls: the relay reports to it.
package callmetrics

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
)

// Counters is the relay's metrics with the counting its calls do. The
// metrics themselves are the embedded metrics.Relay's.
type Counters struct {
	*metrics.Relay

	// drops caches one counter per drop reason so the packet path does a
	// map read under a read lock at most once per reason, then atomics.
	dropsMu sync.RWMutex
	drops   map[string]prometheus.Counter
}

// New makes the relay's metrics as metrics.NewRelay does, with the media
// loops' busy time and sockets, and the ICE and DTLS failure counters at
// zero for the causes the relay knows.
func New(o metrics.Options) *Counters {
	c := &Counters{Relay: metrics.NewRelay(o), drops: map[string]prometheus.Counter{}}
	c.MediaLoops(mediaLoops)
	for _, cause := range []string{media.FailICETimeout, media.FailICEConsent, media.FailICETCPLost} {
		c.ICEFailures.WithLabelValues(cause)
	}
	for _, cause := range []string{media.FailDTLSSetup, media.FailDTLSTimeout, media.FailDTLS, media.FailSRTPKeys} {
		c.DTLSFailures.WithLabelValues(metrics.LegWebRTC, cause)
	}
	for _, cause := range []string{media.FailDTLS, media.FailSRTPKeys} {
		c.DTLSFailures.WithLabelValues(metrics.LegSIP, cause)
	}
	return c
}

// CountDrop counts a packet dropped for reason; safe on the packet path.
func (c *Counters) CountDrop(reason string) {
	c.dropsMu.RLock()
	n := c.drops[reason]
	c.dropsMu.RUnlock()
	if n == nil {
		c.dropsMu.Lock()
		if n = c.drops[reason]; n == nil {
			n = c.PacketsDropped.WithLabelValues(reason)
			c.drops[reason] = n
		}
		c.dropsMu.Unlock()
	}
	n.Inc()
}

// CountRequest counts a SIP request received.
func (c *Counters) CountRequest(req *sip.Request) {
	c.SIPRequests.WithLabelValues(req.Method.String()).Inc()
}

// CountSetupFailure counts a call that failed before answer with code.
func (c *Counters) CountSetupFailure(code int) {
	c.CallSetupFailures.WithLabelValues(strconv.Itoa(code)).Inc()
}

// CountEnd counts a call (or join) on trunk that ended with cause.
func (c *Counters) CountEnd(cause, trunk string) {
	c.CallsTotal.WithLabelValues(cause, trunk).Inc()
}

// CountTransports counts how an ended call's legs carried media ("" for
// a leg not counted).
func (c *Counters) CountTransports(web, sip string) {
	if web != "" {
		c.LegTransports.WithLabelValues(metrics.LegWebRTC, web).Inc()
	}
	if sip != "" {
		c.LegTransports.WithLabelValues(metrics.LegSIP, sip).Inc()
	}
}

// CountLegs adds packet and byte counts to the relay's counters: web's
// to the WebRTC legs', sip's to the SIP legs'.
func (c *Counters) CountLegs(web, sip media.LegStats) {
	c.WebRTC.PacketsIn.Add(float64(web.PacketsIn))
	c.WebRTC.PacketsOut.Add(float64(web.PacketsOut))
	c.WebRTC.BytesIn.Add(float64(web.BytesIn))
	c.WebRTC.BytesOut.Add(float64(web.BytesOut))
	c.SIP.PacketsIn.Add(float64(sip.PacketsIn))
	c.SIP.PacketsOut.Add(float64(sip.PacketsOut))
	c.SIP.BytesIn.Add(float64(sip.BytesIn))
	c.SIP.BytesOut.Add(float64(sip.BytesOut))
}

// CountLegFailure counts a WebRTC leg's failure cause as an ICE or a DTLS
// one; no cause, or a leg closed, counts nothing.
func (c *Counters) CountLegFailure(cause string) {
	switch {
	case cause == "" || cause == media.FailClosed:
	case strings.HasPrefix(cause, "ice_"):
		c.ICEFailures.WithLabelValues(cause).Inc()
	default:
		c.DTLSFailures.WithLabelValues(metrics.LegWebRTC, cause).Inc()
	}
}

// ObserveQuality adds the quality of an ended call's legs, as its CDR rec
// has them, to trunk's histograms: first the WebRTC leg (stats web), then
// the SIP leg (sip).
func (c *Counters) ObserveQuality(trunk string, rec cdr.Record, sip, web media.LegStats) {
	for _, l := range []struct {
		leg, codec string
		loss       float64
		st         media.LegStats
	}{
		{metrics.LegWebRTC, rec.WebRTCCodec, rec.WebRTCLoss, web},
		{metrics.LegSIP, rec.SIPCodec, rec.SIPLoss, sip},
	} {
		c.MOS.WithLabelValues(trunk, l.leg).Observe(cdr.EstimateMOS(l.codec, l.loss, l.st.Jitter, 0))
		c.Loss.WithLabelValues(trunk, l.leg).Observe(l.loss)
		c.Jitter.WithLabelValues(trunk, l.leg).Observe(l.st.Jitter / 1000)
	}
}

// mediaLoops is metrics.Relay.MediaLoops' source: each media loop's busy
// time and sockets.
func mediaLoops() (busy []time.Duration, sockets []int) {
	for _, st := range media.Loops() {
		busy = append(busy, st.Busy)
		sockets = append(sockets, st.Sockets)
	}
	return busy, sockets
}
