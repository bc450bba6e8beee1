// Package media holds the call legs (the SIP-side RTP/SRTP leg; the WebRTC leg
// lives alongside), the port allocator, RTCP and stats, and the passthrough
// Forwarder that joins two legs sharing a codec.
package media

import "encoding/binary"

// RTPReader yields one whole RTP packet per call. It blocks until a packet
// arrives and returns an error once closed.
type RTPReader interface {
	ReadRTP(b []byte) (int, error)
}

// RTPWriter sends one whole RTP packet per call and must not retain b.
type RTPWriter interface {
	WriteRTP(b []byte) error
}

// Minimum RTP header length (RFC 3550 §5.1).
const rtpHeaderMin = 12

// RTPHeaderLen validates the fixed header, CSRC list, header extension and
// padding of pkt and returns the payload offset. ok is false for anything a
// receiver must not trust: wrong version, truncation, lengths pointing past
// the end. It reads bytes only, so it is safe on any input and allocates
// nothing.
func RTPHeaderLen(pkt []byte) (n int, ok bool) {
	if len(pkt) < rtpHeaderMin || pkt[0]>>6 != 2 {
		return 0, false
	}
	n = rtpHeaderMin + 4*int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 {
		if len(pkt) < n+4 {
			return 0, false
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(pkt[n+2:]))
	}
	if len(pkt) < n {
		return 0, false
	}
	if pkt[0]&0x20 != 0 {
		pad := int(pkt[len(pkt)-1])
		if pad == 0 || n+pad > len(pkt) {
			return 0, false
		}
	}
	return n, true
}

// rtpPayloadLen is the payload length of a packet already validated by
// RTPHeaderLen, excluding padding (what an SR's octet count counts).
func rtpPayloadLen(pkt []byte, hdr int) int {
	n := len(pkt) - hdr
	if pkt[0]&0x20 != 0 {
		n -= int(pkt[len(pkt)-1])
	}
	return n
}

// IsRTCP reports whether a packet received on a multiplexed RTP port is RTCP
// (RFC 5761 §4: second byte 192-223, which covers SR/RR/SDES/BYE/APP and the
// feedback and XR types).
func IsRTCP(pkt []byte) bool {
	return len(pkt) >= 2 && pkt[0]>>6 == 2 && pkt[1] >= 192 && pkt[1] <= 223
}

// SSRC returns the synchronisation source of an RTP packet, 0 if too short.
func SSRC(pkt []byte) uint32 {
	if len(pkt) < rtpHeaderMin {
		return 0
	}
	return binary.BigEndian.Uint32(pkt[8:])
}

// Seq returns the sequence number of an RTP packet, 0 if too short.
func Seq(pkt []byte) uint16 {
	if len(pkt) < rtpHeaderMin {
		return 0
	}
	return binary.BigEndian.Uint16(pkt[2:])
}

// Timestamp returns the RTP timestamp of a packet, 0 if too short.
func Timestamp(pkt []byte) uint32 {
	if len(pkt) < rtpHeaderMin {
		return 0
	}
	return binary.BigEndian.Uint32(pkt[4:])
}

// PayloadType returns the 7-bit payload type of an RTP packet, 0 if too short.
func PayloadType(pkt []byte) uint8 {
	if len(pkt) < rtpHeaderMin {
		return 0
	}
	return pkt[1] & 0x7f
}

// Marker returns the marker bit of an RTP packet.
func Marker(pkt []byte) bool {
	return len(pkt) >= rtpHeaderMin && pkt[1]&0x80 != 0
}
