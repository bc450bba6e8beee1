package media

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func TestPortAllocator(t *testing.T) {
	a := testPorts(t, 4)
	var pairs []*PortPair
	seen := map[int]bool{}
	for i := 0; i < 4; i++ {
		p, err := a.Allocate()
		if err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
		if p.Port()%2 != 0 {
			t.Errorf("RTP port %d is odd", p.Port())
		}
		if c, err := p.rtcp.goConn(); err != nil || c.LocalAddr().String() == "" {
			t.Errorf("no RTCP address: %v", err)
		}
		if seen[p.Port()] {
			t.Errorf("port %d handed out twice", p.Port())
		}
		seen[p.Port()] = true
		pairs = append(pairs, p)
	}
	if a.InUse() != 4 {
		t.Errorf("InUse = %d, want 4", a.InUse())
	}
	if _, err := a.Allocate(); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("allocate on a full range: %v, want ErrNoPorts", err)
	}
	for _, p := range pairs {
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		p.Close() // idempotent
	}
	if a.InUse() != 0 {
		t.Errorf("InUse after close = %d, want 0", a.InUse())
	}

	// Round-robin: a just-freed pair is not handed out again at once.
	p1, err := a.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	port1 := p1.Port()
	p1.Close()
	p2, err := a.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if p2.Port() == port1 {
		t.Errorf("freed port %d reused at once", port1)
	}
}

func TestPortAllocatorBadRange(t *testing.T) {
	for _, r := range [][2]int{{0, 10}, {10, 5}, {5, 5}, {20000, 70000}} {
		if _, err := NewPortAllocator("127.0.0.1", r[0], r[1]); err == nil {
			t.Errorf("range %v accepted", r)
		}
	}
	if _, err := NewPortAllocator("not-an-ip", 20000, 20010); err == nil {
		t.Error("bad IP accepted")
	}
}

// TestLegCloseReleasesPorts allocates the whole range through legs, closes
// them, allocates it all again, and checks no goroutine is left behind.
func TestLegCloseReleasesPorts(t *testing.T) {
	base := runtime.NumGoroutine()
	a := testPorts(t, 3)
	for round := 0; round < 2; round++ {
		var legs []*RTPLeg
		for i := 0; i < 3; i++ {
			l, err := NewRTPLeg(RTPLegOptions{Ports: a})
			if err != nil {
				t.Fatalf("round %d leg %d: %v", round, i, err)
			}
			legs = append(legs, l)
		}
		if _, err := NewRTPLeg(RTPLegOptions{Ports: a}); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("leg on a full range: %v, want ErrNoPorts", err)
		}
		// A blocked reader must be released by Close.
		readErr := make(chan error, 1)
		go func() {
			_, err := legs[0].ReadRTP(make([]byte, 1500))
			readErr <- err
		}()
		for _, l := range legs {
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		}
		if err := <-readErr; !isNetClosed(err) {
			t.Fatalf("ReadRTP after Close: %v, want net.ErrClosed", err)
		}
		if a.InUse() != 0 {
			t.Fatalf("InUse after close = %d", a.InUse())
		}
	}
	waitGoroutinesBelow(t, base)
}

func TestLatchingSDP(t *testing.T) {
	var drops dropLog
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{OnDrop: drops.add})
	p := newUDPPeer(t)
	intruder := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))

	// Same host, other port; and RTCP from the intruder too.
	udpSend(t, intruder.rtp, leg.LocalAddr(), mkRTP(t, 0, 1, 160, 0xbad, false, []byte("stolen")))
	udpSend(t, p.rtcp, leg.LocalAddr(), mkRTP(t, 0, 2, 320, 0xbad, false, []byte("wrong port")))
	rr, _ := (&rtcp.ReceiverReport{SSRC: 0xbad}).Marshal()
	udpSend(t, intruder.rtcp, rtcpAddrOf(leg), rr)
	udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, 3, 480, 0x600d, false, []byte("good")))

	got := readLegRTP(t, leg)
	if SSRC(got) != 0x600d || !bytes.HasSuffix(got, []byte("good")) {
		t.Fatalf("delivered %x, want the peer's packet", got)
	}
	// Two RTP drops on the reading goroutine, one RTCP drop on the
	// leg's RTCP goroutine, in whatever order.
	pollUntil(t, "three unlatched drops", func() bool { return drops.count(DropUnlatched) == 3 })
	if s := leg.Stats(); s.PacketsIn != 1 || s.Dropped != 3 {
		t.Errorf("stats %+v, want 1 in, 3 dropped", s)
	}

	// Before SetRemote nothing is accepted at all in sdp mode.
	leg2 := newTestLeg(t, testPorts(t, 1), RTPLegOptions{Latching: LatchSDP, OnDrop: drops.add})
	go leg2.ReadRTP(make([]byte, 1500)) // drops happen on the reading goroutine
	udpSend(t, p.rtp, leg2.LocalAddr(), mkRTP(t, 0, 1, 160, 1, false, []byte("early")))
	pollUntil(t, "early packet drop", func() bool { return leg2.Stats().Dropped == 1 })
	if err := leg2.WriteRTP(mkRTP(t, 0, 1, 1, 1, false, nil)); !errors.Is(err, ErrNoRemote) {
		t.Errorf("WriteRTP without remote: %v, want ErrNoRemote", err)
	}
}

func TestLatchingLearn(t *testing.T) {
	var drops dropLog
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{Latching: LatchLearn, OnDrop: drops.add})
	intruder := newUDPPeer(t)

	// Before the peer's SDP (the answer) nothing is learned: a sprayer
	// racing the call set-up gets nowhere.
	go func() { _, _ = leg.ReadRTP(make([]byte, 1500)) }() // only its drops matter; it returns at Close
	for i := uint16(1); i <= learnPackets+1; i++ {
		udpSend(t, intruder.rtp, leg.LocalAddr(), mkRTP(t, 0, i, 160*uint32(i), 66, false, []byte("early")))
	}
	pollUntil(t, "early packets dropped", func() bool { return drops.count(DropUnlatched) == learnPackets+1 })
	if a := leg.latchedRTP.Load(); a != nil {
		t.Fatalf("latched %v before the SDP", a)
	}
}

// TestLatchingLearnAfterAnswer: once the SDP is known, the source latched
// is the first to send several valid packets in a row (one SSRC, rising
// sequence numbers); garbage, single sprayed packets, and a sprayer
// changing SSRC each packet do not win.
func TestLatchingLearnAfterAnswer(t *testing.T) {
	var drops dropLog
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{Latching: LatchLearn, OnDrop: drops.add})
	sdpPeer := newUDPPeer(t)
	natted := newUDPPeer(t)
	intruder := newUDPPeer(t)
	leg.SetRemote(udpAddr(sdpPeer.rtp), netip.AddrPort{})

	udpSend(t, intruder.rtp, leg.LocalAddr(), []byte{0x80, 0, 0}) // garbage
	for i := uint16(1); i <= learnPackets; i++ {
		udpSend(t, intruder.rtp, leg.LocalAddr(), mkRTP(t, 0, i, 160*uint32(i), 100+uint32(i), false, []byte("inject")))
		payload := []byte("learning")
		if i == learnPackets {
			payload = []byte("latched")
		}
		udpSend(t, natted.rtp, leg.LocalAddr(), mkRTP(t, 0, i, 160*uint32(i), 7, false, payload))
	}
	udpSend(t, intruder.rtp, leg.LocalAddr(), mkRTP(t, 0, 9, 9*160, 7, false, []byte("inject")))
	udpSend(t, natted.rtp, leg.LocalAddr(), mkRTP(t, 0, learnPackets+1, 160*(learnPackets+1), 7, false, []byte("next")))

	for _, want := range []string{"latched", "next"} {
		if got := readLegRTP(t, leg); !bytes.HasSuffix(got, []byte(want)) {
			t.Fatalf("delivered %q, want %q", got[12:], want)
		}
	}
	if a := leg.latchedRTP.Load(); a == nil || *a != udpAddr(natted.rtp) {
		t.Fatalf("latched %v, want the natted peer", a)
	}
	if drops.count(DropMalformed) != 1 || drops.count(DropUnlatched) != 1 || drops.count(DropLearning) != 2*learnPackets-1 {
		t.Errorf("drops %v, want 1 malformed, 1 unlatched, %d learning", drops.all(), 2*learnPackets-1)
	}

	// Symmetric RTP: we answer to the latched source, not the SDP address.
	if err := leg.WriteRTP(mkRTP(t, 0, 9, 9, 9, false, []byte("back"))); err != nil {
		t.Fatal(err)
	}
	got, from := udpRecv(t, natted.rtp)
	if !bytes.HasSuffix(got, []byte("back")) || from != leg.LocalAddr() {
		t.Fatalf("natted peer got %q from %s", got, from)
	}
}

// TestLegStatsLoss checks the RFC 3550 loss count from sequence numbers.
func TestLegStatsLoss(t *testing.T) {
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{})
	p := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	seqs := []uint16{65533, 65534, 65535, 1, 2, 5} // wraps; 0, 3 and 4 lost
	for _, s := range seqs {
		udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, s, uint32(s)*160, 42, false, make([]byte, 160)))
	}
	for range seqs {
		readLegRTP(t, leg)
	}
	s := leg.Stats()
	if s.PacketsIn != uint64(len(seqs)) || s.Lost != 3 {
		t.Errorf("PacketsIn=%d Lost=%d, want %d and 3", s.PacketsIn, s.Lost, len(seqs))
	}
	if s.BytesIn != uint64(len(seqs)*172) || s.LastReceived.IsZero() || s.Jitter < 0 {
		t.Errorf("stats %+v", s)
	}

	// A new SSRC starts a new count; the old loss stays in the total.
	for _, sq := range []uint16{100, 102} {
		udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, sq, 0, 43, false, nil))
		readLegRTP(t, leg)
	}
	if s := leg.Stats(); s.Lost != 4 {
		t.Errorf("Lost after SSRC change = %d, want 4", s.Lost)
	}
}

func TestRTCPReports(t *testing.T) {
	var drops dropLog
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{RTCPInterval: 20 * time.Millisecond, CNAME: "leg@test", OnDrop: drops.add})
	p := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))

	// Media both ways.
	const ourSSRC, peerSSRC = 0x1111, 0x2222
	for i := 0; i < 5; i++ {
		if err := leg.WriteRTP(mkRTP(t, 0, uint16(i), uint32(i)*160, ourSSRC, false, make([]byte, 160))); err != nil {
			t.Fatal(err)
		}
		udpRecv(t, p.rtp)
	}
	for _, s := range []uint16{10, 11, 13} {
		udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, s, uint32(s)*160, peerSSRC, false, make([]byte, 160)))
		readLegRTP(t, leg)
	}

	// The peer's RTCP socket receives a valid compound SR.
	var sr *rtcp.SenderReport
	var cname string
	for sr == nil {
		b, from := udpRecv(t, p.rtcp)
		if from != rtcpAddrOf(leg) {
			t.Fatalf("RTCP from %s, want %s", from, rtcpAddrOf(leg))
		}
		pkts, err := rtcp.Unmarshal(b)
		if err != nil {
			t.Fatalf("leg sent invalid RTCP: %v", err)
		}
		for _, pk := range pkts {
			switch pk := pk.(type) {
			case *rtcp.SenderReport:
				if len(pk.Reports) == 1 && pk.Reports[0].LastSequenceNumber == 13 {
					sr = pk
				}
			case *rtcp.SourceDescription:
				cname = string(pk.Chunks[0].Items[0].Text)
			}
		}
	}
	if sr.SSRC != ourSSRC || sr.PacketCount != 5 || sr.OctetCount != 5*160 {
		t.Errorf("SR %+v, want SSRC %x, 5 packets, 800 octets", sr, ourSSRC)
	}
	if rb := sr.Reports[0]; rb.SSRC != peerSSRC || rb.TotalLost != 1 {
		t.Errorf("report block %+v, want SSRC %x and 1 lost", rb, peerSSRC)
	}
	if cname != "leg@test" {
		t.Errorf("CNAME %q", cname)
	}

	// The peer's RR about our stream lands in Stats, with an RTT from the
	// LSR/DLSR pair.
	rr := &rtcp.ReceiverReport{SSRC: peerSSRC, Reports: []rtcp.ReceptionReport{{
		SSRC: ourSSRC, FractionLost: 64, TotalLost: 5, LastSequenceNumber: 4, Jitter: 80,
		LastSenderReport: uint32(sr.NTPTime >> 16), Delay: 0,
	}}}
	b, err := rr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	udpSend(t, p.rtcp, rtcpAddrOf(leg), b)
	pollUntil(t, "remote stats", func() bool { return leg.Stats().RemoteLost == 5 })
	s := leg.Stats()
	if s.RemoteFractionLost != 0.25 || s.RemoteJitter != 10 || s.RTT <= 0 {
		t.Errorf("remote stats %+v, want 25%% lost, 10 ms jitter, an RTT", s)
	}

	// rtcp-mux: an RR on the RTP port is consumed, not delivered as RTP.
	rr.Reports[0].TotalLost = 6
	b, _ = rr.Marshal()
	udpSend(t, p.rtp, leg.LocalAddr(), b)
	udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, 14, 14*160, peerSSRC, false, []byte("rtp")))
	if got := readLegRTP(t, leg); !bytes.HasSuffix(got, []byte("rtp")) {
		t.Fatalf("delivered %x, want the RTP packet", got)
	}
	if s := leg.Stats(); s.RemoteLost != 6 {
		t.Errorf("muxed RR not handled: RemoteLost %d", s.RemoteLost)
	}

	// Garbage on the RTCP port is counted.
	udpSend(t, p.rtcp, rtcpAddrOf(leg), []byte{0x80, 201, 0, 9, 1})
	pollUntil(t, "rtcp_malformed drop", func() bool { return drops.count(DropRTCPMalformed) == 1 })

	// Close sends a BYE (after whatever reports were in flight). Since
	// the peer uses rtcp-mux now, so does the leg: RTCP goes to the
	// peer's RTP port.
	leg.Close()
	for {
		b, _ := udpRecv(t, p.rtp)
		if !IsRTCP(b) {
			t.Fatalf("RTP after Close: %x", b)
		}
		pkts, err := rtcp.Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if bye, ok := pkts[len(pkts)-1].(*rtcp.Goodbye); ok {
			if len(bye.Sources) != 1 || bye.Sources[0] != ourSSRC {
				t.Errorf("BYE %+v", bye)
			}
			break
		}
	}
}

// TestRTCPReceiverReport: a leg that hasn't sent media reports with RR.
func TestRTCPReceiverReport(t *testing.T) {
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{RTCPInterval: 20 * time.Millisecond, Latching: LatchLearn})
	p := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	for i := uint16(1); i <= learnPackets; i++ { // learn mode latches on the last
		udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, i, 160*uint32(i), 0x77, false, nil))
	}
	readLegRTP(t, leg)
	for {
		b, _ := udpRecv(t, p.rtcp)
		pkts, err := rtcp.Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if rr, ok := pkts[0].(*rtcp.ReceiverReport); ok && len(rr.Reports) == 1 {
			if rr.Reports[0].SSRC != 0x77 {
				t.Errorf("RR %+v", rr)
			}
			return
		}
	}
}

func TestMalformedInput(t *testing.T) {
	var drops dropLog
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{OnDrop: drops.add})
	p := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	bad := [][]byte{
		{},               // empty datagram
		{0x80},           // short
		make([]byte, 12), // version 0
		append([]byte{0x8f, 0}, make([]byte, 10)...),              // 15 CSRCs missing
		append([]byte{0x90, 0}, make([]byte, 12)...),              // extension header cut
		{0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, // extension length past end
		append([]byte{0xa0, 0}, append(make([]byte, 10), 0)...),   // padding count 0
		append([]byte{0xa0, 0}, append(make([]byte, 10), 99)...),  // padding past end
	}
	for _, b := range bad {
		udpSend(t, p.rtp, leg.LocalAddr(), b)
	}
	udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, 1, 1, 1, false, []byte("ok")))
	if got := readLegRTP(t, leg); !bytes.HasSuffix(got, []byte("ok")) {
		t.Fatalf("delivered %x", got)
	}
	if n := drops.count(DropMalformed); n != len(bad) {
		t.Errorf("malformed drops = %d, want %d (%v)", n, len(bad), drops.all())
	}
	for _, b := range bad {
		udpSend(t, p.rtcp, rtcpAddrOf(leg), b)
	}
	pollUntil(t, "rtcp drops", func() bool { return drops.count(DropRTCPMalformed) == len(bad) })
}

func TestSetRemoteRTCPAddress(t *testing.T) {
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{})
	rtpAddr := netip.MustParseAddrPort("192.0.2.7:4000")
	leg.SetRemote(rtpAddr, netip.AddrPort{})
	if dst, conn, ok := leg.rtcpDest(); !ok || dst.Port() != 4001 || conn != leg.pair.rtcp.out {
		t.Errorf("default RTCP dest %v %v", dst, ok)
	}
	leg.SetRemote(rtpAddr, rtpAddr) // a=rtcp-mux
	if dst, conn, ok := leg.rtcpDest(); !ok || dst != rtpAddr || conn != leg.pair.rtp.out {
		t.Errorf("mux RTCP dest %v %v", dst, ok)
	}
	leg.SetRemote(netip.MustParseAddrPort("[::ffff:192.0.2.7]:0"), netip.AddrPort{}) // rejected stream
	if _, _, ok := leg.rtcpDest(); ok {
		t.Error("RTCP dest for a rejected stream")
	}
	if _, ok := leg.rtpDest(); ok {
		t.Error("RTP dest for a rejected stream")
	}
	leg.SetRemote(netip.MustParseAddrPort("0.0.0.0:4000"), netip.AddrPort{}) // hold
	if err := leg.WriteRTP(mkRTP(t, 0, 1, 1, 1, false, nil)); !errors.Is(err, ErrNoRemote) {
		t.Errorf("WriteRTP on hold: %v", err)
	}
}

// TestPauseReadsHandsOver: a reader blocked on the leg returns when reads
// are paused, and a new reader gets the packets that arrived meanwhile.
func TestPauseReadsHandsOver(t *testing.T) {
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{})
	p := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	first := make(chan error, 1)
	go func() {
		_, err := leg.ReadRTP(make([]byte, 1500))
		first <- err
	}()
	if err := leg.PauseReads(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("paused read returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked reader was not released by PauseReads")
	}
	udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, 7, 160, 0x600d, false, []byte("kept")))
	if err := leg.ResumeReads(); err != nil {
		t.Fatal(err)
	}
	if got := readLegRTP(t, leg); !bytes.HasSuffix(got, []byte("kept")) {
		t.Fatalf("new reader got %x", got)
	}
}
