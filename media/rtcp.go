package media

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
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

func (l *RTPLeg) rtcpSendLoop() {
	defer l.loopWG.Done()
	t := time.NewTimer(l.nextRTCPInterval())
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.sendReport(false)
			t.Reset(l.nextRTCPInterval())
		}
	}
}

func (l *RTPLeg) rtcpReadLoop() {
	defer l.readerWG.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := l.pair.RTCP.ReadFromUDPAddrPort(buf)
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
	pkts, err := rtcp.Unmarshal(pkt)
	if err != nil {
		l.drop(DropRTCPMalformed)
		return false
	}
	now := time.Now()
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.SenderReport:
			l.lastSRMid.Store(uint32(p.NTPTime >> 16))
			l.lastSRAt.Store(now.UnixNano())
			l.useReports(p.Reports, now)
		case *rtcp.ReceiverReport:
			l.useReports(p.Reports, now)
		case *rtcp.Goodbye:
			l.log.Debug("rtcp bye", "from", from.String(), "mux", onRTPPort)
		}
	}
	return true
}

// useReports keeps the report block about our own stream, if any.
func (l *RTPLeg) useReports(reports []rtcp.ReceptionReport, now time.Time) {
	ours := l.ssrc
	if l.pktsOut.Load() > 0 {
		ours = l.sentSSRC.Load()
	}
	for _, r := range reports {
		if r.SSRC != ours {
			continue
		}
		l.remoteFrac.Store(uint32(r.FractionLost))
		lost := int64(r.TotalLost & 0xffffff)
		if lost&0x800000 != 0 { // 24-bit two's complement
			lost -= 1 << 24
		}
		l.remoteLost.Store(lost)
		l.remoteJitter.Store(r.Jitter)
		if r.LastSenderReport != 0 {
			// RFC 3550 §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
			rtt := ntpMid(now) - r.LastSenderReport - r.Delay
			if int32(rtt) >= 0 {
				l.rttNanos.Store(int64(rtt) * int64(time.Second) / 65536)
			}
		}
	}
}

// reportBlock builds the reception report for the current incoming source.
func (l *RTPLeg) reportBlock(now time.Time) rtcp.ReceptionReport {
	s := &l.recv
	ssrc := s.pubSSRC.Load()
	extMax := s.pubExtMax.Load()
	expected := int64(extMax) - int64(s.pubBase.Load()) + 1
	received := s.pubRecv.Load()

	p := &l.rtcpLoopState
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
	if at := l.lastSRAt.Load(); at != 0 {
		rr.LastSenderReport = l.lastSRMid.Load()
		rr.Delay = uint32(now.Sub(time.Unix(0, at)) * 65536 / time.Second)
	}
	return rr
}

// sendReport sends a compound SR or RR + SDES CNAME (+ BYE) to the peer's
// RTCP address. It allocates, but runs every few seconds, off the packet
// path.
func (l *RTPLeg) sendReport(bye bool) {
	dst, conn, ok := l.rtcpDest()
	if !ok {
		return
	}
	now := time.Now()
	var reports []rtcp.ReceptionReport
	if l.recv.pubHave.Load() {
		reports = append(reports, l.reportBlock(now))
	}
	ssrc := l.ssrc
	var pkts []rtcp.Packet
	if sent := l.pktsOut.Load(); sent > 0 {
		ssrc = l.sentSSRC.Load()
		// The RTP time that corresponds to now, extrapolated from the
		// last packet we sent, so the peer can sync and measure.
		elapsed := uint64(max(now.UnixNano()-l.sentAt.Load(), 0)) / 1000
		pkts = append(pkts, &rtcp.SenderReport{
			SSRC:        ssrc,
			NTPTime:     ntpTime(now),
			RTPTime:     l.sentTS.Load() + uint32(elapsed*uint64(l.clock)/1e6),
			PacketCount: uint32(sent),
			OctetCount:  uint32(l.octetsOut.Load()),
			Reports:     reports,
		})
	} else {
		pkts = append(pkts, &rtcp.ReceiverReport{SSRC: ssrc, Reports: reports})
	}
	pkts = append(pkts, rtcp.NewCNAMESourceDescription(ssrc, l.cname))
	if bye {
		pkts = append(pkts, &rtcp.Goodbye{Sources: []uint32{ssrc}})
	}
	b, err := rtcp.Marshal(pkts)
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
	if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
		l.log.Debug("rtcp send failed", "to", dst.String(), "err", err)
	}
}
