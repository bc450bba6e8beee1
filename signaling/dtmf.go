package signaling

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// DTMF over SIP INFO (application/dtmf-relay, application/dtmf) is turned
// into RFC 4733 events on the media path and back:
//   - an INFO from the trunk plays the digit to the browser as
//     telephone-event packets, which replace the trunk's audio packets
//     while the event lasts (so timing follows the trunk's 20 ms clock);
//   - towards a trunk with dtmf: info, the browser's telephone-event
//     packets become one INFO per digit instead of RTP.

const dtmfEvents = "0123456789*#ABCD"

// dtmfInjector wraps the SIP leg's reader on the way to the browser.
type dtmfInjector struct {
	src   media.RTPReader
	mu    sync.Mutex
	queue [][]byte
	// queued is len(queue), so that the packet path takes the lock only
	// while a digit is playing.
	queued atomic.Int32
	ssrc   uint32
	seq    uint16
	ts     uint32
}

func (d *dtmfInjector) ReadRTP(b []byte) (int, error) {
	n, err := d.src.ReadRTP(b)
	if err != nil {
		return n, err
	}
	if p := d.next(); p != nil {
		return copy(b, p), nil // the event packet takes the audio packet's place
	}
	return n, nil
}

// next pops the next queued event packet, if any.
func (d *dtmfInjector) next() []byte {
	if d.queued.Load() == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.queue) == 0 {
		return nil
	}
	p := d.queue[0]
	d.queue = d.queue[1:]
	d.queued.Add(-1)
	return p
}

// Serve is ReadRTP for a leg that is a media.PacketSource: packets stay
// on the leg's loop goroutine, and an event packet takes the place of the
// next audio packet as in ReadRTP.
func (d *dtmfInjector) Serve(h func(pkt []byte)) error {
	src, ok := d.src.(media.PacketSource)
	if !ok {
		buf := make([]byte, 2048)
		for {
			n, err := d.ReadRTP(buf)
			if err != nil {
				return err
			}
			h(buf[:n])
		}
	}
	return src.Serve(func(pkt []byte) {
		if p := d.next(); p != nil {
			h(p)
			return
		}
		h(pkt)
	})
}

// play queues one digit of dur as RFC 4733 packets with payload type pt at
// clock rate clock: one per 20 ms, then three end packets.
func (d *dtmfInjector) play(event byte, dur time.Duration, pt uint8, clock uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ssrc == 0 {
		d.ssrc = 0x4d520000 | uint32(time.Now().UnixNano()&0xffff)
	}
	step := clock / 50
	d.ts += 8 * step // a fresh timestamp for each event
	total := uint32(dur.Seconds() * float64(clock))
	total = max(total, step*2)
	mk := func(durUnits uint32, end, marker bool) []byte {
		p := make([]byte, 16)
		p[0] = 0x80
		p[1] = pt
		if marker {
			p[1] |= 0x80
		}
		d.seq++
		binary.BigEndian.PutUint16(p[2:], d.seq)
		binary.BigEndian.PutUint32(p[4:], d.ts)
		binary.BigEndian.PutUint32(p[8:], d.ssrc)
		p[12] = event
		p[13] = 10 // volume -10 dBm0
		if end {
			p[13] |= 0x80
		}
		binary.BigEndian.PutUint16(p[14:], uint16(min(durUnits, 0xffff)))
		return p
	}
	first := true
	for u := step; u < total; u += step {
		d.queue = append(d.queue, mk(u, false, first))
		first = false
	}
	for i := 0; i < 3; i++ {
		d.queue = append(d.queue, mk(total, true, false))
	}
	d.queued.Store(int32(len(d.queue)))
}

// sipReader is what the trunk → browser direction reads from.
func (c *Call) sipReader() media.RTPReader {
	c.dtmfOnce.Do(func() { c.inj.Store(&dtmfInjector{src: c.sipLeg()}) })
	return c.inj.Load()
}

// sipWriter is what the browser → trunk direction writes to: the RTP leg,
// or, for a trunk that takes DTMF as INFO, a filter turning events into INFO.
func (c *Call) sipWriter() media.RTPWriter { return c.sipWriterFor(c.currentPlan()) }

// sipWriterFor is sipWriter for plan, which may not be the call's yet
// (a codec change builds the stages of a new plan before switching).
func (c *Call) sipWriterFor(plan mediaplan.Plan) media.RTPWriter {
	c.r.mu.Lock() // a transfer may change the route and the leg
	route, leg := c.route, c.trunk.rtp
	c.r.mu.Unlock()
	if route == nil || !strings.EqualFold(route.DTMF, "info") || plan.SIPDTMF.PT == 0 {
		return leg
	}
	return &dtmfToInfo{c: c, dst: leg, pt: plan.SIPDTMF.PT, clock: plan.SIPDTMF.Clock}
}

// dtmfToInfo sends telephone-event packets as SIP INFO, one per digit.
type dtmfToInfo struct {
	c      *Call
	dst    media.RTPWriter
	pt     uint8
	clock  uint32
	lastTS uint32
	sent   bool
}

func (f *dtmfToInfo) WriteRTP(b []byte) error {
	if media.PayloadType(b) != f.pt {
		return f.dst.WriteRTP(b)
	}
	hl, ok := media.RTPHeaderLen(b)
	if !ok || len(b) < hl+4 {
		return nil
	}
	ev, end := b[hl], b[hl+1]&0x80 != 0
	ts := media.Timestamp(b)
	if !end || (f.sent && ts == f.lastTS) || int(ev) >= len(dtmfEvents) {
		return nil // only the first end packet of an event counts
	}
	f.lastTS, f.sent = ts, true
	dur := time.Duration(binary.BigEndian.Uint16(b[hl+2:])) * time.Second / time.Duration(max(f.clock, 1))
	digit, c := dtmfEvents[ev], f.c
	go func() {
		// The leg is looked up when the INFO goes: a transfer may have
		// swapped the trunk leg since the packet came.
		if err := c.legNow(sideTrunk).sendInfo(digit, dur); err != nil {
			c.log.Debug("dtmf info failed", "err", err)
		}
	}()
	return nil
}

// onInfo takes DTMF from the trunk as INFO and plays it to the browser.
func (c *Call) onInfo(s side, req *sip.Request, tx sip.ServerTransaction) {
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = strings.ToLower(strings.TrimSpace(h.Value()))
	}
	if len(req.Body()) == 0 {
		respond(tx, req, 200, "OK") // keep-alive style INFO
		return
	}
	digit, dur, ok := parseDTMFInfo(ct, string(req.Body()))
	if !ok {
		respond(tx, req, 415, "Unsupported Media Type", sip.NewHeader("Accept", "application/dtmf-relay, application/dtmf"))
		return
	}
	respond(tx, req, 200, "OK")
	inj := c.inj.Load()
	ev := c.currentPlan().SIPDTMF // the trunk may renumber it mid-call
	if s != sideTrunk || inj == nil || ev.PT == 0 {
		c.log.Info("dtmf info not relayed", "digit", string(digit))
		return
	}
	inj.play(byte(strings.IndexByte(dtmfEvents, digit)), dur, ev.PT, ev.Clock)
}

// parseDTMFInfo reads "Signal=5\r\nDuration=160" (application/dtmf-relay)
// or "5" (application/dtmf).
func parseDTMFInfo(ct, body string) (byte, time.Duration, bool) {
	dur := 160 * time.Millisecond
	var sig string
	switch {
	case strings.HasPrefix(ct, "application/dtmf-relay"):
		for _, line := range strings.Split(body, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "signal":
				sig = strings.TrimSpace(v)
			case "duration":
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 && n <= 5000 {
					dur = time.Duration(n) * time.Millisecond
				}
			}
		}
	case strings.HasPrefix(ct, "application/dtmf"):
		sig = strings.TrimSpace(body)
	default:
		return 0, 0, false
	}
	if sig == "10" {
		sig = "*"
	} else if sig == "11" {
		sig = "#"
	}
	if len(sig) != 1 || !strings.Contains(dtmfEvents, strings.ToUpper(sig)) {
		return 0, 0, false
	}
	return strings.ToUpper(sig)[0], dur, true
}
