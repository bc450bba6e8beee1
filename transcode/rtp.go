package transcode

import (
	"encoding/binary"
	"errors"
)

// rtpHeaderLen is the fixed part of an RTP header (RFC 3550 §5.1).
const rtpHeaderLen = 12

// Parse errors. They are values, not wrapped, so that a dropped packet costs
// no allocation.
var (
	errRTPShort     = errors.New("rtp: packet shorter than its header")
	errRTPVersion   = errors.New("rtp: version is not 2")
	errRTPExtension = errors.New("rtp: header extension overruns packet")
	errRTPPadding   = errors.New("rtp: bad padding length")
	errEventShort   = errors.New("telephone-event: payload shorter than 4 bytes")
)

// rtpPacket is a parsed RTP packet. Payload aliases the buffer it was parsed
// from, so parsing allocates nothing.
type rtpPacket struct {
	Marker  bool
	PT      uint8
	Seq     uint16
	TS      uint32
	SSRC    uint32
	Payload []byte
}

// parseRTP parses an RTP packet, skipping CSRCs and any header extension and
// stripping padding. It never panics on malformed input: anything
// inconsistent is an error.
func parseRTP(b []byte, p *rtpPacket) error {
	if len(b) < rtpHeaderLen {
		return errRTPShort
	}
	if b[0]>>6 != 2 {
		return errRTPVersion
	}
	padding := b[0]&0x20 != 0
	extension := b[0]&0x10 != 0
	cc := int(b[0] & 0x0F)
	p.Marker = b[1]&0x80 != 0
	p.PT = b[1] & 0x7F
	p.Seq = binary.BigEndian.Uint16(b[2:4])
	p.TS = binary.BigEndian.Uint32(b[4:8])
	p.SSRC = binary.BigEndian.Uint32(b[8:12])
	off := rtpHeaderLen + 4*cc
	if len(b) < off {
		return errRTPShort
	}
	if extension {
		if len(b) < off+4 {
			return errRTPExtension
		}
		words := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		off += 4 + 4*words
		if len(b) < off {
			return errRTPExtension
		}
	}
	end := len(b)
	if padding {
		// The last byte counts the padding, itself included (RFC 3550 §5.1).
		n := int(b[end-1])
		if n == 0 || n > end-off {
			return errRTPPadding
		}
		end -= n
	}
	p.Payload = b[off:end]
	return nil
}

// putRTPHeader writes a 12-byte RTP header (no CSRCs, no extension) to b.
func putRTPHeader(b []byte, marker bool, pt uint8, seq uint16, ts, ssrc uint32) {
	_ = b[11]
	b[0] = 0x80
	b[1] = pt & 0x7F
	if marker {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:4], seq)
	binary.BigEndian.PutUint32(b[4:8], ts)
	binary.BigEndian.PutUint32(b[8:12], ssrc)
}

// telephoneEvent is the first (usually only) event block of an RFC 4733
// telephone-event payload.
type telephoneEvent struct {
	Event    uint8
	End      bool
	Volume   uint8
	Duration uint16
}

// parseTelephoneEvent parses the first 4-byte event block of payload.
func parseTelephoneEvent(payload []byte, ev *telephoneEvent) error {
	if len(payload) < 4 {
		return errEventShort
	}
	ev.Event = payload[0]
	ev.End = payload[1]&0x80 != 0
	ev.Volume = payload[1] & 0x3F
	ev.Duration = binary.BigEndian.Uint16(payload[2:4])
	return nil
}

// rescaleEvents copies a telephone-event payload from src to dst, rescaling
// the duration of every whole 4-byte event block by mul/div (6/1 from the
// 8000 Hz to the 48000 Hz clock, 1/6 the other way). A duration that would
// overflow 16 bits is clamped: RFC 4733 §2.5.2.1 has senders split events
// longer than the field can hold, so clamping only bites on events longer
// than 1.36 s at 48 kHz. It returns the number of bytes written, or 0 if
// src is not a telephone-event payload or dst is too small.
func rescaleEvents(dst, src []byte, mul, div uint32) int {
	if len(src) < 4 || len(dst) < len(src) {
		return 0
	}
	n := copy(dst, src)
	for off := 0; off+4 <= n; off += 4 {
		d := uint32(binary.BigEndian.Uint16(src[off+2:off+4])) * mul / div
		if d > 0xFFFF {
			d = 0xFFFF
		}
		binary.BigEndian.PutUint16(dst[off+2:off+4], uint16(d))
	}
	return n
}
