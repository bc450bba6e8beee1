package media

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

var testSuites = []string{SuiteAESCM128SHA1_80, SuiteAESCM128SHA1_32, SuiteAEADAES128GCM, SuiteAEADAES256GCM}

func randomKey(t testing.TB, p srtp.ProtectionProfile) []byte {
	t.Helper()
	kl, _ := p.KeyLen()
	sl, _ := p.SaltLen()
	b := make([]byte, kl+sl)
	rand.Read(b)
	return b
}

// srtpPeer is the far end of an encrypted leg, using pion/srtp directly.
type srtpPeer struct {
	*udpPeer
	enc, dec *srtp.Context
}

func newSRTPPair(t testing.TB, suite string, o RTPLegOptions) (*RTPLeg, *srtpPeer) {
	t.Helper()
	prof, err := SRTPProfile(suite)
	if err != nil {
		t.Fatal(err)
	}
	legKey, peerKey := randomKey(t, prof), randomKey(t, prof)
	kl, _ := prof.KeyLen()
	o.SRTP = &SRTPConfig{Profile: prof, LocalKey: legKey, RemoteKey: peerKey}
	leg := newTestLeg(t, testPorts(t, 1), o)
	p := &srtpPeer{udpPeer: newUDPPeer(t)}
	if p.enc, err = srtp.CreateContext(peerKey[:kl], peerKey[kl:], prof); err != nil {
		t.Fatal(err)
	}
	if p.dec, err = srtp.CreateContext(legKey[:kl], legKey[kl:], prof); err != nil {
		t.Fatal(err)
	}
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	return leg, p
}

func (p *srtpPeer) encrypt(t testing.TB, plain []byte) []byte {
	t.Helper()
	out, err := p.enc.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSRTPLeg(t *testing.T) {
	for _, suite := range testSuites {
		t.Run(suite, func(t *testing.T) {
			var drops dropLog
			leg, p := newSRTPPair(t, suite, RTPLegOptions{OnDrop: drops.add, RTCPInterval: 20 * time.Millisecond})

			// Peer → leg: decrypted in place, plaintext delivered.
			for i := 0; i < 3; i++ {
				plain := mkRTP(t, 0, uint16(100+i), uint32(i)*160, 0x5150, false, []byte(fmt.Sprintf("secret %d", i)))
				enc := p.encrypt(t, plain)
				if bytes.Contains(enc, []byte("secret")) {
					t.Fatal("peer sent plaintext")
				}
				udpSend(t, p.rtp, leg.LocalAddr(), enc)
				if got := readLegRTP(t, leg); !bytes.Equal(got, plain) {
					t.Fatalf("leg read %x, want %x", got, plain)
				}
			}

			// Leg → peer: encrypted on the wire, the peer decrypts it.
			plain := mkRTP(t, 8, 7, 1120, 0xabc, true, []byte("answer"))
			if err := leg.WriteRTP(plain); err != nil {
				t.Fatal(err)
			}
			wire, _ := udpRecv(t, p.rtp)
			if bytes.Contains(wire, []byte("answer")) {
				t.Fatal("leg sent plaintext")
			}
			dec, err := p.dec.DecryptRTP(nil, wire, nil)
			if err != nil || !bytes.Equal(dec, plain) {
				t.Fatalf("peer decrypt: %v %x", err, dec)
			}
			if !bytes.HasSuffix(plain, []byte("answer")) {
				t.Fatal("WriteRTP modified its input")
			}

			// SRTCP both ways: the leg's SR decrypts and parses at the
			// peer, and the peer's RR reaches the leg's stats.
			for got := false; !got; {
				b, _ := udpRecv(t, p.rtcp)
				pt, err := p.dec.DecryptRTCP(nil, b, nil)
				if err != nil {
					t.Fatalf("peer SRTCP decrypt: %v", err)
				}
				pkts, err := rtcp.Unmarshal(pt)
				if err != nil {
					t.Fatal(err)
				}
				sr, ok := pkts[0].(*rtcp.SenderReport)
				got = ok && sr.SSRC == 0xabc && sr.PacketCount == 1
			}
			rr, _ := (&rtcp.ReceiverReport{SSRC: 0x5150, Reports: []rtcp.ReceptionReport{{SSRC: 0xabc, TotalLost: 3}}}).Marshal()
			srr, err := p.enc.EncryptRTCP(nil, rr, nil)
			if err != nil {
				t.Fatal(err)
			}
			udpSend(t, p.rtcp, rtcpAddrOf(leg), srr)
			pollUntil(t, "SRTCP RR", func() bool { return leg.Stats().RemoteLost == 3 })
			// A plaintext RR is not authentic and is dropped.
			rr, _ = (&rtcp.ReceiverReport{SSRC: 0x5150, Reports: []rtcp.ReceptionReport{{SSRC: 0xabc, TotalLost: 9}}}).Marshal()
			udpSend(t, p.rtcp, rtcpAddrOf(leg), rr)
			pollUntil(t, "plain RTCP drop", func() bool { return drops.count(DropSRTPAuth) == 1 })
			if leg.Stats().RemoteLost != 3 {
				t.Error("unauthenticated RTCP was used")
			}
		})
	}
}

func TestSRTPTamperedAndReplayed(t *testing.T) {
	for _, suite := range testSuites {
		t.Run(suite, func(t *testing.T) {
			var drops dropLog
			leg, p := newSRTPPair(t, suite, RTPLegOptions{OnDrop: drops.add})
			first := p.encrypt(t, mkRTP(t, 0, 1, 160, 9, false, []byte("one")))
			tampered := p.encrypt(t, mkRTP(t, 0, 2, 320, 9, false, []byte("two")))
			tampered[14] ^= 1 // in the payload
			good := p.encrypt(t, mkRTP(t, 0, 3, 480, 9, false, []byte("three")))

			udpSend(t, p.rtp, leg.LocalAddr(), first)
			udpSend(t, p.rtp, leg.LocalAddr(), tampered)
			udpSend(t, p.rtp, leg.LocalAddr(), first) // replay
			udpSend(t, p.rtp, leg.LocalAddr(), good)
			for _, want := range []string{"one", "three"} {
				if got := readLegRTP(t, leg); !bytes.HasSuffix(got, []byte(want)) {
					t.Fatalf("delivered %x, want %q", got, want)
				}
			}
			if drops.count(DropSRTPAuth) != 1 || drops.count(DropSRTPReplay) != 1 {
				t.Errorf("drops %v, want one srtp_auth and one srtp_replay", drops.all())
			}
			if s := leg.Stats(); s.PacketsIn != 2 || s.Dropped != 2 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestSRTPLearnLatchNeedsAuth: in learn mode an unauthenticated packet
// cannot win the latch.
func TestSRTPLearnLatchNeedsAuth(t *testing.T) {
	var drops dropLog
	leg, p := newSRTPPair(t, SuiteAESCM128SHA1_80, RTPLegOptions{Latching: LatchLearn, OnDrop: drops.add})
	intruder := newUDPPeer(t)
	udpSend(t, intruder.rtp, leg.LocalAddr(), mkRTP(t, 0, 1, 160, 9, false, make([]byte, 40)))
	for i := uint16(1); i <= learnPackets; i++ {
		udpSend(t, p.rtp, leg.LocalAddr(), p.encrypt(t, mkRTP(t, 0, i, 160*uint32(i), 9, false, []byte("real"))))
	}
	if got := readLegRTP(t, leg); !bytes.HasSuffix(got, []byte("real")) {
		t.Fatalf("delivered %x", got)
	}
	if a := leg.latchedRTP.Load(); a == nil || *a != udpAddr(p.rtp) {
		t.Fatalf("latched %v, want the peer", a)
	}
	if drops.count(DropSRTPAuth) != 1 {
		t.Errorf("drops %v", drops.all())
	}
}

func TestSRTPConfigErrors(t *testing.T) {
	ports := testPorts(t, 1)
	prof := srtp.ProtectionProfileAes128CmHmacSha1_80
	for _, c := range []*SRTPConfig{
		{Profile: prof, LocalKey: make([]byte, 30), RemoteKey: make([]byte, 29)},
		{Profile: prof, LocalKey: make([]byte, 16), RemoteKey: make([]byte, 30)},
		{Profile: 0x99, LocalKey: make([]byte, 30), RemoteKey: make([]byte, 30)},
	} {
		if _, err := NewRTPLeg(RTPLegOptions{Ports: ports, SRTP: c}); err == nil {
			t.Errorf("config %+v accepted", c.Profile)
		}
	}
	if ports.InUse() != 0 {
		t.Error("failed leg kept its ports")
	}
	if _, err := SRTPProfile("NULL_HMAC_SHA1_80"); err == nil {
		t.Error("unsupported suite accepted")
	}
}

// BenchmarkSRTPReencrypt is the SRTP cost of relaying one 172-byte packet
// between two encrypted legs: authenticate+decrypt (with replay check) on
// the receiving leg, encrypt on the sending one, reused buffers.
func BenchmarkSRTPReencrypt(b *testing.B) {
	for _, suite := range testSuites {
		b.Run(suite, func(b *testing.B) {
			prof, _ := SRTPProfile(suite)
			inKey, outKey := randomKey(b, prof), randomKey(b, prof)
			in, err := newSRTPSession(&SRTPConfig{Profile: prof, LocalKey: outKey, RemoteKey: inKey})
			if err != nil {
				b.Fatal(err)
			}
			kl, _ := prof.KeyLen()
			peer, _ := srtp.CreateContext(inKey[:kl], inKey[kl:], prof)

			// Encrypted input is prepared in chunks outside the timer:
			// the replay window forbids reusing a packet.
			const chunk = 1024
			plain := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
			wire := make([][]byte, chunk)
			for i := range wire {
				wire[i] = make([]byte, 0, 256)
			}
			var hdr rtp.Header
			var seq uint16
			fill := func() {
				for i := range wire {
					seq++
					plain[2], plain[3] = byte(seq>>8), byte(seq)
					wire[i], _ = peer.EncryptRTP(wire[i][:0], plain, &hdr)
				}
			}
			b.SetBytes(int64(len(plain)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%chunk == 0 {
					b.StopTimer()
					fill()
					b.StartTimer()
				}
				pt, reason, ok := in.decryptRTP(wire[i%chunk])
				if !ok {
					b.Fatal(reason)
				}
				if _, err := in.encRTP.EncryptRTP(in.sealBuf(), pt, &in.whdr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSRTPLegLoopback is BenchmarkRTPLegLoopback with SRTP on both
// legs (AES_CM_128_HMAC_SHA1_80): encrypt, send, receive, decrypt.
func BenchmarkSRTPLegLoopback(b *testing.B) {
	prof := srtp.ProtectionProfileAes128CmHmacSha1_80
	k1, k2 := randomKey(b, prof), randomKey(b, prof)
	ports := testPorts(b, 2)
	tx := newTestLeg(b, ports, RTPLegOptions{SRTP: &SRTPConfig{Profile: prof, LocalKey: k1, RemoteKey: k2}})
	rx := newTestLeg(b, ports, RTPLegOptions{SRTP: &SRTPConfig{Profile: prof, LocalKey: k2, RemoteKey: k1}})
	tx.SetRemote(rx.LocalAddr(), rtcpAddrOf(rx))
	rx.SetRemote(tx.LocalAddr(), rtcpAddrOf(tx))
	pkt := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
	buf := make([]byte, 1500)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var seq uint16
	for b.Loop() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		if err := tx.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := rx.ReadRTP(buf); err != nil {
			b.Fatal(err)
		}
	}
}
