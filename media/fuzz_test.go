package media

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// fuzzLeg is a leg without sockets: the fuzz target drives its input path
// (accept, acceptRTCP) directly.
func fuzzLeg(learn bool, sess *srtpSession) *RTPLeg {
	l := &RTPLeg{
		o:         RTPLegOptions{ClockRate: 8000, RTCPInterval: defaultRTCPInterval},
		log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		learn:     learn,
		rtcpState: rtcpState{clock: 8000},
		srtp:      sess,
	}
	l.recv.clockRate = 8000
	return l
}

// FuzzRTPInput feeds arbitrary datagrams to everything that parses network
// input on the SIP leg: the RTP header checks, the leg's RTP and RTCP input
// paths in both latching modes, the RFC 3550 statistics, and the forwarder.
func FuzzRTPInput(f *testing.F) {
	seed := func(b []byte, err error) {
		if err == nil {
			f.Add(b, false)
			f.Add(b, true)
		}
	}
	seed(mkRTP(f, 0, 1, 160, 42, true, []byte("hello")), nil)
	seed([]byte{0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 1, 1, 2, 3, 4}, nil)
	seed([]byte{0xa1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 9, 9, 9, 9, 0, 2}, nil)
	seed((&rtcp.SenderReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 2, TotalLost: 0xffffff}}}).Marshal())
	seed((&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 0, LastSenderReport: 5}}}).Marshal())
	seed(rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 1}, rtcp.NewCNAMESourceDescription(1, "x"), &rtcp.Goodbye{Sources: []uint32{1}}}))
	f.Add([]byte{}, false)

	src := netip.MustParseAddrPort("192.0.2.1:4000")
	key := make([]byte, 30)
	f.Fuzz(func(t *testing.T, data []byte, learn bool) {
		if n, ok := RTPHeaderLen(data); ok && (n < rtpHeaderMin || n > len(data) || rtpPayloadLen(data, n) < 0) {
			t.Fatalf("header length %d for %d bytes", n, len(data))
		}
		sess, err := newSRTPSession(&SRTPConfig{Profile: srtp.ProtectionProfileAes128CmHmacSha1_80, LocalKey: key, RemoteKey: key})
		if err != nil {
			t.Fatal(err)
		}
		// Plain and SRTP legs. Several passes each, with rising sequence
		// numbers on RTP, so later passes run the statistics update
		// against the state the first one left, and learn mode latches.
		for _, l := range []*RTPLeg{fuzzLeg(learn, nil), fuzzLeg(learn, sess)} {
			l.SetRemote(src, netip.AddrPort{})
			for i := range learnPackets + 1 {
				pkt := append([]byte(nil), data...)
				if i > 0 && l.srtp == nil && len(pkt) >= rtpHeaderMin && !IsRTCP(pkt) {
					binary.BigEndian.PutUint16(pkt[2:4], binary.BigEndian.Uint16(pkt[2:4])+uint16(i))
				}
				if n, ok := l.accept(pkt, src); ok && (n > len(data) || (l.srtp == nil && n != len(data))) {
					t.Fatalf("accepted %d of %d bytes", n, len(data))
				}
				l.acceptRTCP(append([]byte(nil), data...), netip.AddrPortFrom(src.Addr(), src.Port()+1))
				_ = l.Stats()
				if l.recv.pubHave.Load() {
					_ = l.reportBlock(&l.recv, l.recv.epoch)
				}
			}
		}

		fw := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 8, 101: 96, 127: 0}, ClockRate: 8000})
		for range 2 {
			pkt := append([]byte(nil), data...)
			if fw.Rewrite(pkt) && len(pkt) != len(data) {
				t.Fatal("length changed")
			}
		}
	})
}
