package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// End-to-end mode (media_mode: e2e). The relay anchors the media — ICE on
// the browser's side, latching on the SIP side — but the DTLS handshake and
// the SRTP keys belong to the two endpoints: DTLS records and SRTP/SRTCP
// cross the relay unchanged. A leg in this mode runs no pion/dtls session
// and never holds a key, so nothing it forwards can be read or altered here
// (the SRTP authentication tag covers the RTP header, which is why payload
// types must be the same on both legs).

// keysExported counts the SRTP keys the relay itself derived from a DTLS
// handshake (its WebRTC legs and its DTLS-SRTP SIP legs). An end-to-end
// call leaves it unchanged; tests assert that, not logs.
var keysExported atomic.Uint64

// KeysExported is how many DTLS-SRTP key exports the relay's own legs have
// made since the process started.
func KeysExported() uint64 { return keysExported.Load() }

// OpaqueWriter takes a packet that the relay may not change: a DTLS record,
// SRTP or SRTCP of an end-to-end call.
type OpaqueWriter interface {
	WriteOpaque(pkt []byte) error
}

// opaqueStage is the Stage of an end-to-end call's direction: every packet
// goes out as it came in.
type opaqueStage struct {
	dst    OpaqueWriter
	onDrop func(reason string)
}

// NewOpaqueStage returns a Stage that writes each packet to dst unchanged;
// a failed write is dropped and reported to onDrop (if set) as
// DropWriteFailed.
func NewOpaqueStage(dst OpaqueWriter, onDrop func(reason string)) Stage {
	return &opaqueStage{dst: dst, onDrop: onDrop}
}

func (s *opaqueStage) Process(pkt []byte) {
	if err := s.dst.WriteOpaque(pkt); err != nil && s.onDrop != nil {
		s.onDrop(DropWriteFailed)
	}
}

func (s *opaqueStage) Flush()              {}
func (s *opaqueStage) Position() StreamPos { return StreamPos{} }
func (s *opaqueStage) Resume(StreamPos)    {}

// isMediaRecord says whether an opaque packet is SRTP (counted as media),
// not a DTLS record or SRTCP.
func isMediaRecord(pkt []byte) bool { return !isDTLS(pkt) && !IsRTCP(pkt) }

// SetE2E makes the leg forward opaquely. It must be called before the leg
// is used (before SetRemote and Serve). A leg in this mode accepts, from
// the latched peer only, DTLS records and SRTP/SRTCP, and hands them to its
// reader unchanged; it sends no RTCP of its own (its reports would be
// plain RTCP inside an encrypted session).
func (l *RTPLeg) SetE2E() { l.opaque.Store(true) }

// E2E reports whether the leg forwards opaquely (SetE2E).
func (l *RTPLeg) E2E() bool { return l.opaque.Load() }

// SRTPKeyed reports whether the leg holds SRTP keys of its own (SDES or a
// DTLS handshake it ran).
func (l *RTPLeg) SRTPKeyed() bool { return l.srtp != nil }

// acceptOpaque is accept's part for DTLS and SRTCP on an end-to-end leg;
// handled is false for what accept goes on to treat as (S)RTP.
func (l *RTPLeg) acceptOpaque(pkt []byte, from netip.AddrPort) (n int, ok, handled bool) {
	switch {
	case isDTLS(pkt):
		// Before any media there is nothing learned: DTLS comes only
		// from the address the peer's SDP gave, or from the latched one.
		if a := l.latchedRTP.Load(); a != nil {
			if *a != from {
				l.drop(DropUnlatched)
				return 0, false, true
			}
		} else if r := l.remote.Load(); r == nil || r.rtp != from {
			l.drop(DropUnlatched)
			return 0, false, true
		}
		return len(pkt), true, true
	case IsRTCP(pkt):
		if !l.rtcpSourceOK(from, true) {
			l.drop(DropUnlatched)
			return 0, false, true
		}
		return len(pkt), true, true
	}
	return 0, false, false
}

// WriteOpaque sends pkt to the peer unchanged: to where its media is
// latched from, else to its SDP address.
func (l *RTPLeg) WriteOpaque(pkt []byte) error {
	dst, ok := l.rtpDest()
	if !ok {
		return ErrNoRemote
	}
	// pkt is the packet being forwarded: it may leave with the rest of
	// its media loop's round.
	if err := l.out.sendFor(pkt, pkt, dst); err != nil {
		return fmt.Errorf("rtp leg %s: write to %s: %w", l.local, dst, err)
	}
	if isMediaRecord(pkt) {
		l.pktsOut.Add(1)
		l.bytesOut.Add(uint64(len(pkt)))
	}
	return nil
}

// E2E reports whether the leg forwards DTLS and SRTP opaquely (made by
// AnswerE2E or OfferE2E).
func (l *WebRTCLeg) E2E() bool { return l.e2e }

// awaitICE is an end-to-end leg's stand-in for the handshake: it fails
// the leg when no connectivity check verifies in time.
func (l *WebRTCLeg) awaitICE() {
	t := time.NewTimer(l.connectTimeout)
	defer t.Stop()
	select {
	case <-l.haveDst:
	case <-l.closed:
	case <-t.C:
		l.fail(FailICETimeout, errors.New("no ICE connectivity check before the timeout"))
	}
}

// passIn is the receive path of an end-to-end leg: a DTLS record, SRTP or
// SRTCP from a verified source goes to the reader unchanged. SRTP headers
// are in the clear, so receive statistics and latching work as usual.
func (l *WebRTCLeg) passIn(pkt []byte, now time.Time) {
	media := isMediaRecord(pkt)
	if media {
		if _, ok := RTPHeaderLen(pkt); !ok {
			l.dropped.Add(1)
			return
		}
	}
	l.rmu.Lock()
	if media {
		l.rx.update(pkt, now)
	}
	if ref := l.sink.Load(); ref != nil {
		ref.h(pkt)
	} else {
		l.dropped.Add(1)
	}
	l.rmu.Unlock()
}

// WriteOpaque sends pkt to the browser unchanged on the selected pair;
// before ICE has verified one it is dropped (DTLS retransmits).
func (l *WebRTCLeg) WriteOpaque(pkt []byte) error {
	if l.isClosed() {
		return fmt.Errorf("webrtc leg: %w", net.ErrClosed)
	}
	d := l.dst.Load()
	if d == nil {
		return nil
	}
	if err := d.sendFor(pkt, pkt); err != nil {
		return fmt.Errorf("webrtc leg: send to %s: %w", d.addr, err)
	}
	if isMediaRecord(pkt) {
		l.pktsOut.Add(1)
		l.bytesOut.Add(uint64(len(pkt)))
	}
	return nil
}
