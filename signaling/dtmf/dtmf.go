// Package dtmf turns DTMF carried as SIP INFO (application/dtmf-relay,
// application/dtmf) into RFC 4733 telephone-event packets on a media path
// and back:
//   - an Injector plays a digit the trunk sent as INFO to the browser as
//     telephone-event packets, which replace the trunk's audio packets
//     while the event lasts (so timing follows the trunk's 20 ms clock);
//   - towards a trunk with dtmf: info, a ToInfo writer turns the browser's
//     telephone-event packets into one INFO per digit instead of RTP.
//
// ParseInfo reads an INFO's body. Sending the INFO, and choosing which
// payload type and clock a call's telephone-event has, stay with the call
// (signaling).
package dtmf

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/media"
)

// Events are the DTMF digits in the order of their RFC 4733 event codes.
const Events = "0123456789*#ABCD"

// Injector plays digits into the SIP leg's stream on its way to the
// browser: Play hands the leg the event packets, and the leg delivers them
// in the place of its next audio packets (media.RTPLeg.Inject), so the
// packet path has nothing wrapped around it. Reading goes to the leg.
type Injector struct {
	Leg
	mu   sync.Mutex // the event stream's SSRC, sequence and timestamp
	ssrc uint32
	seq  uint16
	ts   uint32
}

// Leg is what an Injector plays into: read, served, and given packets to
// deliver in the place of the next it receives (a *media.RTPLeg).
type Leg interface {
	media.RTPReader
	media.PacketSource
	Inject(pkts [][]byte)
}

// NewInjector plays into leg.
func NewInjector(leg Leg) *Injector { return &Injector{Leg: leg} }

// Play queues one digit (its event code) of dur as RFC 4733 packets with
// payload type pt at clock rate clock: one per 20 ms, then three end
// packets.
func (d *Injector) Play(event byte, dur time.Duration, pt uint8, clock uint32) {
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
	var pkts [][]byte
	first := true
	for u := step; u < total; u += step {
		pkts = append(pkts, mk(u, false, first))
		first = false
	}
	for i := 0; i < 3; i++ {
		pkts = append(pkts, mk(total, true, false))
	}
	d.Inject(pkts)
}

// ToInfo writes RTP to a SIP leg but sends telephone-event packets as SIP
// INFO, one per digit.
type ToInfo struct {
	dst    media.RTPWriter
	pt     uint8
	clock  uint32
	send   func(digit byte, dur time.Duration)
	lastTS uint32
	sent   bool
}

// NewToInfo writes to dst, except telephone-event packets of payload type
// pt at clock rate clock: for each digit, send is called once, on the
// packet path, so it must not block (it sends the INFO elsewhere).
func NewToInfo(dst media.RTPWriter, pt uint8, clock uint32, send func(digit byte, dur time.Duration)) *ToInfo {
	return &ToInfo{dst: dst, pt: pt, clock: clock, send: send}
}

// WriteRTP passes an audio packet on, and turns the first end packet of
// an event into a call of send.
func (f *ToInfo) WriteRTP(b []byte) error {
	if media.PayloadType(b) != f.pt {
		return f.dst.WriteRTP(b)
	}
	hl, ok := media.RTPHeaderLen(b)
	if !ok || len(b) < hl+4 {
		return nil
	}
	ev, end := b[hl], b[hl+1]&0x80 != 0
	ts := media.Timestamp(b)
	if !end || (f.sent && ts == f.lastTS) || int(ev) >= len(Events) {
		return nil // only the first end packet of an event counts
	}
	f.lastTS, f.sent = ts, true
	dur := time.Duration(binary.BigEndian.Uint16(b[hl+2:])) * time.Second / time.Duration(max(f.clock, 1))
	f.send(Events[ev], dur)
	return nil
}

// ParseInfo reads "Signal=5\r\nDuration=160" (application/dtmf-relay)
// or "5" (application/dtmf): the digit, as in Events, and its duration.
func ParseInfo(ct, body string) (byte, time.Duration, bool) {
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
	if len(sig) != 1 || !strings.Contains(Events, strings.ToUpper(sig)) {
		return 0, 0, false
	}
	return strings.ToUpper(sig)[0], dur, true
}
