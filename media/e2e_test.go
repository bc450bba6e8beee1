package media

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/stun/v4"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// fakeDTLS is a datagram that RFC 7983 classes as DTLS (a handshake record
// header and junk): the relay must pass it on without looking further.
func fakeDTLS(tag byte) []byte {
	return []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, tag, tag, tag}
}

// fakeSRTCP is an RTCP-classed datagram (an SR header and junk).
func fakeSRTCP(tag byte) []byte {
	b := []byte{0x80, 200, 0, 6, 1, 2, 3, 4}
	return append(b, bytes.Repeat([]byte{tag}, 20)...)
}

// TestE2ELegsForwardOpaquely: an end-to-end WebRTC leg joined to an
// end-to-end RTP leg passes DTLS records, SRTP and SRTCP unchanged both
// ways between the ICE-verified browser and the SDP address of the far
// end; sources neither verified nor latched are dropped and counted, never
// forwarded; and neither leg holds or exports a key.
func TestE2ELegsForwardOpaquely(t *testing.T) {
	keysBefore := KeysExported()
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", ConnectTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sip := newTestLeg(t, testPorts(t, 2), RTPLegOptions{})
	sip.SetE2E()
	far := udpListen(t)
	sip.SetRemote(udpAddr(far), netip.AddrPort{})

	farCert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	farFP, _ := Fingerprint(farCert, "sha-256")
	c := newRawICEClient(t, 1)
	web, answer, err := w.AnswerE2E(c.sdp("offer", "actpass"), []sdp.Codec{{Name: "PCMU", PT: 0, Clock: 8000, Channels: 1}}, E2EPeer{Fingerprint: farFP, Setup: sdp.SetupActive})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	if !strings.Contains(answer, "a=fingerprint:"+farFP+"\r\n") || !strings.Contains(answer, "a=setup:active\r\n") || strings.Contains(answer, "a=ssrc:") {
		t.Fatalf("answer does not carry the far end's DTLS identity (or announces an SSRC):\n%s", answer)
	}
	c.learnRelay(answer)

	toSIP, toWeb := NewPath(NewOpaqueStage(sip, nil)), NewPath(NewOpaqueStage(web, nil))
	done := make(chan error, 2)
	go func() { done <- toSIP.Run(web) }()
	go func() { done <- toWeb.Run(sip) }()

	// Nothing from the browser before ICE verifies it.
	s := c.socks[0]
	udpSend(t, s.conn, c.relayAddr, fakeDTLS(1))
	pollUntil(t, "the unverified record counted", func() bool { return w.StrayPackets() >= 1 })
	c.check(s, true)
	select {
	case <-web.Connected():
	case <-time.After(10 * time.Second):
		t.Fatal("an end-to-end leg is connected once ICE verifies a pair")
	}

	srtp := mkRTP(t, 0, 7, 160, 0xabcdef, false, bytes.Repeat([]byte{0x55}, 170)) // header in clear, the rest opaque
	for _, pkt := range [][]byte{fakeDTLS(2), srtp, fakeSRTCP(3)} {
		udpSend(t, s.conn, c.relayAddr, pkt)
		if got, _ := udpRecv(t, far); !bytes.Equal(got, pkt) {
			t.Fatalf("browser → far end changed the packet:\n got %x\nwant %x", got, pkt)
		}
	}
	fromFar := mkRTP(t, 0, 9, 320, 0x123456, false, bytes.Repeat([]byte{0x66}, 170))
	for _, tc := range []struct {
		pkt []byte
		at  chan []byte
	}{{fakeDTLS(4), s.dtls}, {fromFar, s.rtp}} {
		udpSend(t, far, sip.LocalAddr(), tc.pkt)
		select {
		case got := <-tc.at:
			if !bytes.Equal(got, tc.pkt) {
				t.Fatalf("far end → browser changed the packet:\n got %x\nwant %x", got, tc.pkt)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("far end's %x never reached the browser", tc.pkt[:2])
		}
	}

	// Spraying both ports from elsewhere: dropped, counted, not forwarded.
	stranger := udpListen(t)
	strays, dropped := w.StrayPackets(), sip.Stats().Dropped
	for _, pkt := range [][]byte{fakeDTLS(9), srtp} {
		udpSend(t, stranger, c.relayAddr, pkt)
		udpSend(t, stranger, sip.LocalAddr(), pkt)
	}
	pollUntil(t, "the sprayed packets counted", func() bool {
		return w.StrayPackets() >= strays+2 && sip.Stats().Dropped >= dropped+2
	})
	sentinel := fakeDTLS(7)
	udpSend(t, s.conn, c.relayAddr, sentinel)
	if got, _ := udpRecv(t, far); !bytes.Equal(got, sentinel) {
		t.Fatalf("the far end got %x, not the browser's next packet", got)
	}
	udpSend(t, far, sip.LocalAddr(), sentinel)
	if got := <-s.dtls; !bytes.Equal(got, sentinel) {
		t.Fatalf("the browser got %x, not the far end's next packet", got)
	}

	if web.SRTPKeyed() || sip.SRTPKeyed() || !web.E2E() || !sip.E2E() {
		t.Fatalf("keyed: web %v sip %v; e2e: web %v sip %v", web.SRTPKeyed(), sip.SRTPKeyed(), web.E2E(), sip.E2E())
	}
	if n := KeysExported(); n != keysBefore {
		t.Fatalf("%d SRTP keys exported during an end-to-end call", n-keysBefore)
	}
	if ws, ss := web.Stats(), sip.Stats(); ws.PacketsIn != 1 || ss.PacketsOut != 1 || ss.PacketsIn != 1 || ws.PacketsOut != 1 {
		t.Fatalf("SRTP counted: web in %d out %d, sip in %d out %d; want 1 each", ws.PacketsIn, ws.PacketsOut, ss.PacketsIn, ss.PacketsOut)
	}
	web.Close()
	sip.Close()
	for range 2 {
		<-done
	}
}

// TestE2ELegConsent: an end-to-end leg runs no handshake, yet consent
// freshness (RFC 7675) holds as for any leg: once the browser stops its
// checks the leg fails with FailICEConsent.
func TestE2ELegConsent(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", ConnectTimeout: 10 * time.Second, ConsentTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := newRawICEClient(t, 1)
	web, answer, err := w.AnswerE2E(c.sdp("offer", "actpass"), []sdp.Codec{{Name: "PCMU", PT: 0, Clock: 8000, Channels: 1}},
		E2EPeer{Fingerprint: "sha-256 " + strings.Repeat("AB:", 31) + "AB", Setup: sdp.SetupPassive})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	c.learnRelay(answer)
	c.check(c.socks[0], true)
	select {
	case <-web.Failed():
		if web.FailCause() != FailICEConsent {
			t.Fatalf("leg failed with %s, want %s", web.FailCause(), FailICEConsent)
		}
	case <-time.After(30 * time.Second): // failsafe only
		t.Fatal("consent never expired on an end-to-end leg")
	}
}

// TestE2EInputAllocs: the end-to-end receive paths allocate nothing per
// packet.
func TestE2EInputAllocs(t *testing.T) {
	l := fuzzLeg(false, nil)
	l.SetE2E()
	src := netip.MustParseAddrPort("192.0.2.1:4000")
	l.SetRemote(src, netip.AddrPort{})
	pkt := mkRTP(t, 0, 1, 160, 42, false, make([]byte, 170))
	dtls := fakeDTLS(1)
	seq := uint16(1)
	if n := testing.AllocsPerRun(200, func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		l.accept(pkt, src)
		l.accept(dtls, src)
	}); n != 0 {
		t.Fatalf("rtp leg: %.1f allocations per packet", n)
	}

	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	web, _, err := w.AnswerE2E(newRawICEClient(t, 1).sdp("offer", "actpass"), []sdp.Codec{{Name: "PCMU", PT: 0, Clock: 8000, Channels: 1}},
		E2EPeer{Fingerprint: "sha-256 " + strings.Repeat("AB:", 31) + "AB", Setup: sdp.SetupPassive})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	passed := 0
	web.sink.Store(&sinkRef{func([]byte) { passed++ }})
	now := time.Now()
	if n := testing.AllocsPerRun(200, func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		web.media(pkt, now)
	}); n != 0 {
		t.Fatalf("webrtc leg: %.1f allocations per packet", n)
	}
	if passed == 0 {
		t.Fatal("nothing passed")
	}
}

// TestE2ERTPLegICE: an end-to-end RTP leg with ICE answers the far end's
// connectivity check on its port with its own credentials; the verified
// source, which is not the SDP's address, is then latched: its DTLS is
// passed on and the leg sends there. Before the check, and after a forged
// one, that source gets nothing through.
func TestE2ERTPLegICE(t *testing.T) {
	leg := newTestLeg(t, testPorts(t, 2), RTPLegOptions{})
	lines, err := leg.EnableICE(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	var ufrag, pwd string
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "ice-ufrag:"); ok {
			ufrag = v
		}
		if v, ok := strings.CutPrefix(l, "ice-pwd:"); ok {
			pwd = v
		}
	}
	if ufrag == "" || pwd == "" || lines[0] != "ice-lite" {
		t.Fatalf("ICE lines: %q", lines)
	}
	leg.SetE2E()
	leg.SetRemoteICE("farend")
	sdpSock, far, forger := udpListen(t), udpListen(t), udpListen(t)
	leg.SetRemote(udpAddr(sdpSock), netip.AddrPort{})
	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, err := leg.ReadRTP(buf)
			if err != nil {
				return
			}
			got <- bytes.Clone(buf[:n])
		}
	}()

	check := func(from *net.UDPConn, password string) {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(ufrag+":farend"),
			stun.NewShortTermIntegrity(password), stun.Fingerprint)
		udpSend(t, from, leg.LocalAddr(), req.Raw)
	}
	dropped := leg.Stats().Dropped
	udpSend(t, far, leg.LocalAddr(), fakeDTLS(1)) // not yet verified
	check(forger, "wrong password")
	pollUntil(t, "the unverified record and the forged check dropped", func() bool { return leg.Stats().Dropped >= dropped+2 })
	if _, ok := leg.ICEVerified(); ok {
		t.Fatal("a forged check verified")
	}

	check(far, pwd)
	raw, _ := udpRecv(t, far)
	res := &stun.Message{Raw: raw}
	if err := res.Decode(); err != nil || res.Type != stun.BindingSuccess {
		t.Fatalf("check answered %v (%v)", res.Type, err)
	}
	if err := stun.NewShortTermIntegrity(pwd).Check(res); err != nil {
		t.Fatalf("response integrity: %v", err)
	}
	if a, ok := leg.ICEVerified(); !ok || a != udpAddr(far) {
		t.Fatalf("verified %v %v, want %v", a, ok, udpAddr(far))
	}
	rec := fakeDTLS(2)
	udpSend(t, far, leg.LocalAddr(), rec)
	select {
	case p := <-got:
		if !bytes.Equal(p, rec) {
			t.Fatalf("passed %x, sent %x", p, rec)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the verified source's DTLS was not passed on")
	}
	if err := leg.WriteOpaque(fakeDTLS(3)); err != nil {
		t.Fatal(err)
	}
	if p, _ := udpRecv(t, far); !bytes.Equal(p, fakeDTLS(3)) {
		t.Fatalf("the verified source got %x", p)
	}
}
