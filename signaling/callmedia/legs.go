package callmedia

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/signaling/dtmf"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// webIO is the browser leg as the forwarders see it: a transfer from the
// browser side swaps in the new browser's leg without restarting them.
type webIO struct {
	cur atomic.Pointer[media.WebRTCLeg]
}

func (w *webIO) ReadRTP(b []byte) (int, error) {
	for {
		l := w.cur.Load()
		n, err := l.ReadRTP(b)
		if err != nil && w.cur.Load() != l {
			continue // the leg was swapped (and the old one closed): read the new one
		}
		return n, err
	}
}

// Attach delivers the current browser leg's packets to h, moving on to
// the new leg when a transfer swaps it in (media.PacketSource).
func (w *webIO) Attach(h func(pkt []byte), done func(error)) {
	l := w.cur.Load()
	l.Attach(h, func(err error) {
		if w.cur.Load() != l {
			w.Attach(h, done) // the leg was swapped (and the old one closed)
			return
		}
		done(err)
	})
}

func (w *webIO) WriteRTP(b []byte) error { return w.cur.Load().WriteRTP(b) }

// WriteOpaque sends an end-to-end packet to the current browser leg.
func (w *webIO) WriteOpaque(b []byte) error { return w.cur.Load().WriteOpaque(b) }

// SetWeb makes leg the call's browser leg, for the forwarding too.
func (m *Media) SetWeb(leg *media.WebRTCLeg) { m.web.cur.Store(leg) }

// Web is the current browser leg; nil before the call has one.
func (m *Media) Web() *media.WebRTCLeg { return m.web.cur.Load() }

// sipReader is what the trunk → browser direction reads from: the trunk's
// RTP leg through the injector that plays DTMF from INFO.
func (m *Media) sipReader() media.RTPReader {
	m.injOnce.Do(func() {
		_, rtp := m.legs.Trunk()
		m.inj.Store(dtmf.NewInjector(rtp))
	})
	return m.inj.Load()
}

// SIPWriter is what the browser → trunk direction writes to: the RTP leg,
// or, for a trunk that takes DTMF as INFO, a filter turning events into
// INFO.
func (m *Media) SIPWriter() media.RTPWriter { return m.sipWriterFor(m.Plan()) }

// sipWriterFor is SIPWriter for plan, which may not be the call's yet
// (a codec change builds the stages of a new plan before switching).
func (m *Media) sipWriterFor(plan mediaplan.Plan) media.RTPWriter {
	route, leg := m.legs.Trunk() // a transfer may change the route and the leg
	if route == nil || !strings.EqualFold(route.DTMF, "info") || plan.SIPDTMF.PT == 0 {
		return leg
	}
	return dtmf.NewToInfo(leg, plan.SIPDTMF.PT, plan.SIPDTMF.Clock, func(digit byte, dur time.Duration) {
		go func() {
			// The leg is looked up when the INFO goes: a transfer may have
			// swapped the trunk leg since the packet came.
			if err := m.legs.SendInfo(digit, dur); err != nil {
				m.log.Debug("dtmf info failed", "err", err)
			}
		}()
	})
}

// PlayDigit plays a digit from the trunk's INFO to the browser for dur,
// as the plan's telephone-event (the trunk may renumber it mid-call). It
// reports false when it cannot: no forwarding yet, or no telephone-event.
func (m *Media) PlayDigit(digit byte, dur time.Duration) bool {
	inj := m.inj.Load()
	ev := m.Plan().SIPDTMF
	if inj == nil || ev.PT == 0 {
		return false
	}
	inj.Play(byte(strings.IndexByte(dtmf.Events, digit)), dur, ev.PT, ev.Clock)
	return true
}

// Moved is what the legs moved since it was last asked, for the relay's
// counters; zero before the media has started.
func (m *Media) Moved() (web, sip media.LegStats) {
	if !m.Started() {
		return web, sip
	}
	_, rtp := m.legs.Trunk()
	w := m.Web()
	if w == nil || rtp == nil {
		return web, sip
	}
	return m.counted.Moved(w, rtp)
}

// FirstMedia is, once, the time from answered to the first packet
// received on the later of the two legs, when both have received; ok is
// false before then and after it was reported.
func (m *Media) FirstMedia(answered time.Time) (d time.Duration, ok bool) {
	if answered.IsZero() || m.firstMedia.Load() || !m.Started() {
		return 0, false
	}
	_, rtp := m.legs.Trunk()
	web := m.Web()
	if web == nil || rtp == nil {
		return 0, false
	}
	wf, sf := web.Stats().FirstReceived, rtp.Stats().FirstReceived
	if wf.IsZero() || sf.IsZero() || !m.firstMedia.CompareAndSwap(false, true) {
		return 0, false
	}
	last := wf
	if sf.After(last) {
		last = sf
	}
	return max(last.Sub(answered), 0), true // early media may precede the answer
}
