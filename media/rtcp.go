package media

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
)

// rtcpPrior holds the RFC 3550 A.3 "prior" counters for the fraction lost
// of the next report. Only the RTCP sender touches it.
type rtcpPrior struct {
	have     bool
	ssrc     uint32
	expected int64
	received uint64
}

// ntpTime converts t to the 64-bit NTP format of an SR (RFC 3550 §4).
func ntpTime(t time.Time) uint64 {
	const unixToNTP = 2208988800
	secs := uint64(t.Unix()) + unixToNTP
	frac := (uint64(t.Nanosecond()) << 32) / 1e9
	return secs<<32 | frac
}

// ntpMid is the middle 32 bits of the NTP time, the unit of LSR and DLSR.
func ntpMid(t time.Time) uint32 { return uint32(ntpTime(t) >> 16) }

// nextRTCPInterval randomises the interval over [0.5, 1.5) of the mean, as
// RFC 3550 §6.3.1 asks, so that many legs started together don't report in
// lockstep.
func (l *RTPLeg) nextRTCPInterval() time.Duration {
	return l.o.RTCPInterval/2 + rand.N(l.o.RTCPInterval)
}

// startReports schedules the leg's RTCP reports on a timer rather than a
// goroutine of its own: a call costs no stack while it waits.
func (l *RTPLeg) startReports() {
	l.rtcpMu.Lock()
	defer l.rtcpMu.Unlock()
	l.rtcpTimer = time.AfterFunc(l.nextRTCPInterval(), l.reportTick)
}

func (l *RTPLeg) reportTick() {
	l.rtcpMu.Lock()
	defer l.rtcpMu.Unlock()
	if l.rtcpStopped {
		return
	}
	l.sendReport(false)
	l.rtcpTimer.Reset(l.nextRTCPInterval())
}

// stopReports cancels the timer; a report in progress finishes first.
func (l *RTPLeg) stopReports() {
	l.rtcpMu.Lock()
	defer l.rtcpMu.Unlock()
	l.rtcpStopped = true
	if l.rtcpTimer != nil {
		l.rtcpTimer.Stop()
	}
}

// rtcpPort is the RTCP socket's handler on a media loop.
type rtcpPort struct {
	l    *RTPLeg
	fd   int
	lp   *loop
	slot int32
}

// startRTCPReads puts the RTCP socket on a media loop, or where there are
// none gives it a reading goroutine.
func (l *RTPLeg) startRTCPReads() {
	if lp, err := pickLoop(); err == nil {
		if fd := l.pair.rtcp.fd; fd >= 0 {
			p := &rtcpPort{l: l, fd: fd, lp: lp}
			if slot, err := lp.add(fd, p); err == nil {
				p.slot = slot
				l.rtcpPort = p
				return
			}
		}
	}
	l.readerWG.Add(1)
	go l.rtcpReadLoop()
}

func (p *rtcpPort) ready(lp *loop, now time.Time) {
	for {
		n := lp.batch.take(p.fd)
		for i := range n {
			pkt, from, truncated := lp.batch.at(i)
			p.datagram(pkt, from, truncated, now)
		}
		if n < lp.batch.size() {
			return
		}
	}
}

func (p *rtcpPort) recvFD() int { return p.fd }

func (p *rtcpPort) datagram(pkt []byte, from netip.AddrPort, truncated bool, _ time.Time) {
	if !truncated {
		p.l.acceptRTCP(pkt, from)
	}
}

// stopRTCPReads takes the RTCP socket off its loop before it closes.
func (l *RTPLeg) stopRTCPReads() {
	if p := l.rtcpPort; p != nil {
		p.lp.remove(p.slot, p.fd)
	}
}

func (l *RTPLeg) rtcpReadLoop() {
	defer l.readerWG.Done()
	buf := make([]byte, 1500)
	conn, err := l.pair.rtcp.goConn()
	if err != nil {
		return
	}
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Not expected on an unconnected UDP socket; don't let
			// a persistent error spin the loop.
			l.log.Debug("rtcp read failed", "err", err)
			select {
			case <-l.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		l.acceptRTCP(buf[:n], unmap(from))
	}
}

// acceptRTCP is the untrusted-input path of the RTCP port.
func (l *RTPLeg) acceptRTCP(pkt []byte, from netip.AddrPort) {
	if !l.rtcpSourceOK(from, false) {
		l.drop(DropUnlatched)
		return
	}
	if l.handleRTCP(pkt, from, false) && l.learn && l.latchedRTCP.Load() == nil {
		a := from
		l.latchedRTCP.CompareAndSwap(nil, &a)
	}
}

// handleRTCP parses a compound RTCP packet from an accepted source and keeps
// what the peer reports about our stream. It returns false (and counts a
// drop) if the packet doesn't parse.
func (l *RTPLeg) handleRTCP(pkt []byte, from netip.AddrPort, onRTPPort bool) bool {
	if l.srtp != nil {
		var reason string
		var ok bool
		if pkt, reason, ok = l.srtp.decryptRTCP(pkt); !ok {
			l.drop(reason)
			return false
		}
	}
	if !l.received(pkt, time.Now()) {
		l.drop(DropRTCPMalformed)
		return false
	}
	return true
}

// sendReport sends a compound SR or RR + SDES CNAME (+ BYE) to the peer's
// RTCP address. It allocates, but runs every few seconds, off the packet
// path.
func (l *RTPLeg) sendReport(bye bool) {
	if l.opaque.Load() {
		return // plain RTCP has no place in the endpoints' SRTP session
	}
	dst, out, ok := l.rtcpDest()
	if !ok {
		return
	}
	b, err := l.report(&l.recv, time.Now(), bye)
	if err != nil {
		l.log.Warn("rtcp marshal failed", "err", err)
		return
	}
	if l.srtp != nil {
		if b, err = l.srtp.encryptRTCP(b); err != nil {
			l.log.Warn("srtcp encrypt failed", "err", err)
			return
		}
	}
	if err := out.sendTo(b, dst); err != nil {
		l.log.Debug("rtcp send failed", "to", dst.String(), "err", err)
	}
}

// rtcpState is one leg's RTCP session (RFC 3550 §6): what we sent, for our
// sender reports, and what the peer reports about it. Both kinds of leg
// embed it. The counters are atomics: the packet path updates them and the
// reporting timer reads them.
type rtcpState struct {
	ssrc  uint32 // our SSRC for RTCP until we send media
	cname string
	clock uint32 // of what we send, for SR timestamps and jitter in ms

	pktsOut, bytesOut, octetsOut atomic.Uint64
	sentSSRC                     atomic.Uint32
	sentTS                       atomic.Uint32
	sentAt                       atomic.Int64 // unix nanos of the last send; 0 if none

	// From the peer's RTCP.
	lastSRMid    atomic.Uint32 // middle 32 bits of the peer's last SR NTP time
	lastSRAt     atomic.Int64  // when it arrived, unix nanos
	remoteLost   atomic.Int64
	remoteFrac   atomic.Uint32 // fraction lost × 256
	remoteJitter atomic.Uint32 // timestamp units
	rttNanos     atomic.Int64
	prior        rtcpPrior // owned by the report sender
}

// sent counts one RTP packet sent at now (b, with octets of payload).
func (r *rtcpState) sent(b []byte, octets int, now time.Time) {
	r.pktsOut.Add(1)
	r.bytesOut.Add(uint64(len(b)))
	r.octetsOut.Add(uint64(octets))
	if ssrc := SSRC(b); r.sentSSRC.Load() != ssrc { // rarely changes; a store is a locked instruction
		r.sentSSRC.Store(ssrc)
	}
	r.sentTS.Store(Timestamp(b))
	r.sentAt.Store(now.UnixNano())
}

// received keeps what a plaintext compound RTCP packet from the peer says;
// false if it does not parse.
func (r *rtcpState) received(pkt []byte, now time.Time) bool {
	pkts, err := rtcp.Unmarshal(pkt)
	if err != nil {
		return false
	}
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.SenderReport:
			r.lastSRMid.Store(uint32(p.NTPTime >> 16))
			r.lastSRAt.Store(now.UnixNano())
			r.useReports(p.Reports, now)
		case *rtcp.ReceiverReport:
			r.useReports(p.Reports, now)
		}
	}
	return true
}

// useReports keeps the report block about our own stream, if any.
func (r *rtcpState) useReports(reports []rtcp.ReceptionReport, now time.Time) {
	ours := r.ssrc
	if r.pktsOut.Load() > 0 {
		ours = r.sentSSRC.Load()
	}
	for _, rr := range reports {
		if rr.SSRC != ours {
			continue
		}
		r.remoteFrac.Store(uint32(rr.FractionLost))
		lost := int64(rr.TotalLost & 0xffffff)
		if lost&0x800000 != 0 { // 24-bit two's complement
			lost -= 1 << 24
		}
		r.remoteLost.Store(lost)
		r.remoteJitter.Store(rr.Jitter)
		if rr.LastSenderReport != 0 {
			// RFC 3550 §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
			rtt := ntpMid(now) - rr.LastSenderReport - rr.Delay
			if int32(rtt) >= 0 {
				r.rttNanos.Store(int64(rtt) * int64(time.Second) / 65536)
			}
		}
	}
}

// peerStats fills what the peer reported into s.
func (r *rtcpState) peerStats(s *LegStats) {
	s.RemoteLost = r.remoteLost.Load()
	s.RemoteFractionLost = float64(r.remoteFrac.Load()) / 256
	if r.clock != 0 {
		s.RemoteJitter = float64(r.remoteJitter.Load()) * 1000 / float64(r.clock)
	}
	s.RTT = time.Duration(r.rttNanos.Load())
}

// reportBlock builds the reception report for the current incoming source.
func (r *rtcpState) reportBlock(s *recvStats, now time.Time) rtcp.ReceptionReport {
	ssrc := s.pubSSRC.Load()
	extMax := s.pubExtMax.Load()
	expected := int64(extMax) - int64(s.pubBase.Load()) + 1
	received := s.pubRecv.Load()

	p := &r.prior
	if !p.have || p.ssrc != ssrc || expected < p.expected || received < p.received {
		*p = rtcpPrior{have: true, ssrc: ssrc}
	}
	expInt := expected - p.expected
	lostInt := expInt - int64(received-p.received)
	p.expected, p.received = expected, received
	var frac uint8
	if expInt > 0 && lostInt > 0 {
		frac = uint8(min(lostInt<<8/expInt, 255))
	}
	lost := min(max(expected-int64(received), -0x800000), 0x7fffff)

	rr := rtcp.ReceptionReport{
		SSRC:               ssrc,
		FractionLost:       frac,
		TotalLost:          uint32(lost) & 0xffffff,
		LastSequenceNumber: extMax,
		Jitter:             s.pubJitter.Load() >> 4,
	}
	if at := r.lastSRAt.Load(); at != 0 {
		rr.LastSenderReport = r.lastSRMid.Load()
		rr.Delay = uint32(now.Sub(time.Unix(0, at)) * 65536 / time.Second)
	}
	return rr
}

// report marshals a compound SR (or RR, before we sent anything) with a
// block about recv's current source, SDES CNAME, and BYE if asked.
func (r *rtcpState) report(recv *recvStats, now time.Time, bye bool) ([]byte, error) {
	var reports []rtcp.ReceptionReport
	if recv.pubHave.Load() {
		reports = append(reports, r.reportBlock(recv, now))
	}
	ssrc := r.ssrc
	var pkts []rtcp.Packet
	if sent := r.pktsOut.Load(); sent > 0 {
		ssrc = r.sentSSRC.Load()
		// The RTP time that corresponds to now, extrapolated from the
		// last packet we sent, so the peer can sync and measure.
		elapsed := uint64(max(now.UnixNano()-r.sentAt.Load(), 0)) / 1000
		pkts = append(pkts, &rtcp.SenderReport{
			SSRC:        ssrc,
			NTPTime:     ntpTime(now),
			RTPTime:     r.sentTS.Load() + uint32(elapsed*uint64(r.clock)/1e6),
			PacketCount: uint32(sent),
			OctetCount:  uint32(r.octetsOut.Load()),
			Reports:     reports,
		})
	} else {
		pkts = append(pkts, &rtcp.ReceiverReport{SSRC: ssrc, Reports: reports})
	}
	pkts = append(pkts, rtcp.NewCNAMESourceDescription(ssrc, r.cname))
	if bye {
		pkts = append(pkts, &rtcp.Goodbye{Sources: []uint32{ssrc}})
	}
	return rtcp.Marshal(pkts)
}
