package transcode

import (
	"encoding/binary"
	"testing"
)

func FuzzParseRTP(f *testing.F) {
	f.Add(rtp(111, true, 1, 960, 5, []byte{0xF8, 0xFF, 0xFE}))
	f.Add(rtp(101, false, 2, 160, 5, eventPayload(5, true, 10, 800)))
	// CSRCs, extension and padding.
	f.Add([]byte{0xB1, 0x00, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 3, 4, 0xBE, 0xDE, 0, 1, 9, 9, 9, 9, 0xAA, 0, 0, 2})
	f.Add([]byte{0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p rtpPacket
		if err := parseRTP(b, &p); err != nil {
			return
		}
		if len(b) < rtpHeaderLen || b[0]>>6 != 2 {
			t.Fatal("accepted a packet without a v2 header")
		}
		// The payload must alias b after the fixed header and inside it.
		off := cap(b) - cap(p.Payload)
		if off < rtpHeaderLen || off+len(p.Payload) > len(b) {
			t.Fatalf("payload [%d:%d] of a %d-byte packet", off, off+len(p.Payload), len(b))
		}
		if len(p.Payload) > 0 && &p.Payload[0] != &b[off] {
			t.Fatal("payload does not alias the packet")
		}
		if p.PT != b[1]&0x7F || p.Seq != binary.BigEndian.Uint16(b[2:]) || p.SSRC != binary.BigEndian.Uint32(b[8:]) {
			t.Fatal("header fields misread")
		}
		var ev telephoneEvent
		if err := parseTelephoneEvent(p.Payload, &ev); err != nil {
			if len(p.Payload) >= 4 {
				t.Fatal("rejected a 4-byte event")
			}
			return
		}
		// Up then down the clocks restores any duration that fits at 48 kHz.
		up := make([]byte, len(p.Payload))
		down := make([]byte, len(p.Payload))
		if rescaleEvents(up, p.Payload, 6, 1) != len(p.Payload) || rescaleEvents(down, up, 1, 6) != len(p.Payload) {
			t.Fatal("rescale refused a valid payload")
		}
		var back telephoneEvent
		_ = parseTelephoneEvent(down, &back)
		if ev.Duration <= 0xFFFF/6 && back != ev {
			t.Fatalf("rescale round trip %+v → %+v", ev, back)
		}
	})
}

// FuzzBridge feeds arbitrary packet sequences (each packet prefixed by a
// one-byte length) to both directions of a bridge: it must never panic,
// and everything it writes must be a well-formed RTP packet of ours.
func FuzzBridge(f *testing.F) {
	seed := []byte{}
	for _, p := range [][]byte{
		rtp(111, true, 1, 960, 5, []byte{0x08, 0x0B, 0xE4}),
		rtp(0, true, 1, 160, 5, make([]byte, 160)),
		rtp(126, true, 2, 960, 5, eventPayload(5, false, 10, 960)),
		rtp(101, true, 3, 960, 5, eventPayload(5, true, 10, 160)),
		rtp(111, false, 900, 960, 6, []byte{0xFC}),
	} {
		seed = append(seed, byte(len(p)))
		seed = append(seed, p...)
	}
	f.Add(seed, false)
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, data []byte, g722 bool) {
		codec, pt := "PCMU", uint8(0)
		if g722 {
			codec, pt = "G722", 9
		}
		b, err := NewBridge(Options{OpusPT: 111, WebRTCDTMFPT: 126, SIPCodec: codec, SIPPT: pt, SIPDTMFPT: 101, PtimeMs: 30, OpusFEC: true})
		if err != nil {
			t.Fatal(err)
		}
		check := checkWriter{t: t}
		b.sip.to, b.web.to = &check, &check
		for len(data) > 0 {
			n := min(int(data[0]), len(data)-1)
			pkt := data[1 : 1+n]
			data = data[1+n:]
			b.sip.handle(&b.sip, pkt)
			b.web.handle(&b.web, pkt)
		}
		b.sip.ring.flush()
		b.web.ring.flush()
	})
}

type checkWriter struct{ t *testing.T }

func (w *checkWriter) WriteRTP(b []byte) error {
	var p rtpPacket
	if err := parseRTP(b, &p); err != nil {
		w.t.Fatalf("bridge wrote a malformed packet: %v", err)
	}
	if p.PT != 111 && p.PT != 126 && p.PT != 0 && p.PT != 9 && p.PT != 101 {
		w.t.Fatalf("bridge wrote PT %d", p.PT)
	}
	return nil
}
