package signaling

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/stun/v4"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
	"github.com/mediarelay/mediarelay/transcode"
	"github.com/mediarelay/mediarelay/transcode/tone"
)

// e2eTrunk is the relay's entry for u in end-to-end mode.
func e2eTrunk(u *secTrunk, fallback string) config.Trunk {
	tr := u.trunkConfig(mediaplan.SRTPOff, mediaplan.ModeE2E, "PCMU")
	tr.E2EFallback = fallback
	return tr
}

// sdpFingerprint is the a=fingerprint of an SDP's audio ("sha-256 AB:...").
func sdpFingerprint(t *testing.T, body string) string {
	t.Helper()
	fp, _, err := media.RemoteDTLS(body)
	if err != nil {
		t.Fatalf("fingerprint: %v\n%s", err, body)
	}
	return fp
}

// TestE2EOutboundDTLSPeer: a pion client calls a trunk whose peer runs
// DTLS-SRTP itself, with media_mode e2e. Audio goes both ways (the peer
// decrypts what the browser sent and echoes it re-encrypted); the answer
// the browser gets carries the peer's fingerprint, and the certificate the
// browser's DTLS handshake verified is the peer's; the peer was offered the
// browser's fingerprint; the relay's legs hold no key and the process
// exported none; the CDR says e2e.
func TestE2EOutboundDTLSPeer(t *testing.T) {
	u := newSecTrunk(t, "udp", nil)
	u.dtlsMode, u.ownSSRC = true, 0x5eed0001
	r := startRelayWith(t, nil, nil, func(c *config.Config) {
		c.Trunks = []config.Trunk{e2eTrunk(u, "")}
	})
	keys := media.KeysExported()
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	callID := activeCallID(t, r)

	_, offer, _ := sdp.Parse(u.lastInvite().Body())
	if offer.Proto != "UDP/TLS/RTP/SAVP" || len(offer.Crypto) != 0 {
		t.Fatalf("offer to the trunk: proto %s, %d crypto lines", offer.Proto, len(offer.Crypto))
	}
	// ICE-lite towards a trunk that speaks ICE, on the port c=/m= give.
	wantCand := fmt.Sprintf(" udp %%d %s %d typ host", offer.Addr, offer.Port)
	var cand string
	for _, at := range offer.Attrs {
		if at.Key == "candidate" {
			cand = at.Value
		}
	}
	var prio int
	if _, err := fmt.Sscanf(strings.TrimPrefix(cand, "1 1"), wantCand, &prio); err != nil || !strings.Contains(string(u.lastInvite().Body()), "a=ice-lite") {
		t.Fatalf("offer to the trunk: candidate %q, want ice-lite and one at %s:%d (%v)", cand, offer.Addr, offer.Port, err)
	}
	if got, want := sdpFingerprint(t, string(u.lastInvite().Body())), sdpFingerprint(t, p.pc.LocalDescription().SDP); got != want {
		t.Fatalf("the trunk was offered fingerprint %s, the browser's is %s", got, want)
	}
	peerFP := *u.dtlsFP.Load()
	if got := sdpFingerprint(t, p.pc.RemoteDescription().SDP); got != peerFP {
		t.Fatalf("the browser was answered fingerprint %s, the trunk's certificate is %s", got, peerFP)
	}

	echoFrames(t, p, 60)
	if u.decOK.Load() < 40 || u.decFail.Load() != 0 {
		t.Fatalf("trunk decrypted %d packets from the browser, %d failed", u.decOK.Load(), u.decFail.Load())
	}
	der := p.pc.GetSenders()[0].Transport().GetRemoteCertificate()
	if got, _ := media.Fingerprint(tls.Certificate{Certificate: [][]byte{der}}, "sha-256"); got != peerFP {
		t.Fatalf("the browser's DTLS peer presented %s, not the trunk's %s", got, peerFP)
	}

	var web *media.WebRTCLeg
	var sipLeg *media.RTPLeg
	for _, c := range r.calls.List() {
		web, sipLeg = liveWebLeg(c), c.sipLeg()
	}
	if web == nil || sipLeg == nil {
		t.Fatal("no live call")
	}
	// Junk DTLS and SRTP sprayed at the trunk-side port from elsewhere is
	// dropped and counted; the call's media goes on.
	before := metricValue(metricsText(t, r), "mediarelay_packets_dropped_total", `reason="unlatched_source"`)
	spray, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer spray.Close()
	junk := [][]byte{{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 1}, append([]byte{0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7}, make([]byte, 160)...)}
	for _, b := range junk {
		_, _ = spray.WriteToUDPAddrPort(b, sipLeg.LocalAddr())
	}
	waitFor(t, "the sprayed packets counted", 5*time.Second, func() bool {
		return metricValue(metricsText(t, r), "mediarelay_packets_dropped_total", `reason="unlatched_source"`) >= before+2
	})
	// Sequence numbers go on from the first batch: SRTP is end to end, and
	// the far end's replay protection would drop a batch that starts over.
	for i := range 20 {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(3000 + i), Timestamp: uint32(90000 + i*160), SSRC: 1234},
			Payload: append([]byte(fmt.Sprintf("after-spray-%02d", i)), make([]byte, 145)...)}
		if err := p.track.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := 0
	for _, pkt := range p.collect(time.Second) {
		if strings.HasPrefix(string(pkt.Payload), "after-spray-") {
			back++
		}
	}
	if back < 18 {
		t.Fatalf("after the spray only %d of 20 frames came back", back)
	}
	// The trunk holds and resumes: the relay's answers keep the browser's
	// fingerprint and the role the first answer settled (passive: the
	// trunk is active); a move to another codec gets 488.
	u.bookMu.Lock()
	d := u.dialogs[len(u.dialogs)-1]
	u.bookMu.Unlock()
	trunkSDP := string(d.InviteResponse.Body())
	reinvite := func(body string) *sip.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		target := d.InviteRequest.Contact().Address
		req := sip.NewRequest(sip.INVITE, *target.Clone())
		req.SetBody([]byte(body))
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res, err := d.Do(ctx, req)
		if err != nil {
			t.Fatalf("trunk re-INVITE: %v", err)
		}
		if res.StatusCode == 200 {
			ack := sip.NewRequest(sip.ACK, *target.Clone())
			ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
			_ = d.WriteRequest(ack)
		}
		return res
	}
	browserFP := sdpFingerprint(t, p.pc.LocalDescription().SDP)
	for i, dir := range []string{"sendonly", "sendrecv"} {
		res := reinvite(sdp.Rewrite(trunkSDP, dir, uint64(10+i), ""))
		if res.StatusCode != 200 || !strings.Contains(string(res.Body()), "a=setup:passive") || sdpFingerprint(t, string(res.Body())) != browserFP {
			t.Fatalf("trunk %s re-INVITE answered %d:\n%s", dir, res.StatusCode, res.Body())
		}
	}
	pcma := strings.NewReplacer(" UDP/TLS/RTP/SAVP 0", " UDP/TLS/RTP/SAVP 8", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000").Replace(sdp.Rewrite(trunkSDP, "sendrecv", 12, ""))
	if res := reinvite(pcma); res.StatusCode != 488 {
		t.Fatalf("a codec change on an e2e call answered %d", res.StatusCode)
	}
	if !web.E2E() || web.SRTPKeyed() || !sipLeg.E2E() || sipLeg.SRTPKeyed() {
		t.Fatalf("web leg e2e %v keyed %v; sip leg e2e %v keyed %v", web.E2E(), web.SRTPKeyed(), sipLeg.E2E(), sipLeg.SRTPKeyed())
	}
	if n := media.KeysExported(); n != keys {
		t.Fatalf("the relay exported %d SRTP keys during an end-to-end call", n-keys)
	}
	if ws, ss := web.Stats(), sipLeg.Stats(); ws.PacketsIn < 40 || ss.PacketsIn < 40 || ws.PacketsOut < 40 || ss.PacketsOut < 40 {
		t.Fatalf("leg counters: web %+v sip %+v", ws, ss)
	}

	p.hangup()
	waitChan(t, "BYE at the trunk", u.byes)
	if rec := callRecord(t, r, callID); rec.Mode != mediaplan.ModeE2E || rec.SIPPacketsIn < 40 || rec.WebRTCPacketsIn < 40 {
		t.Fatalf("CDR: mode %q, packets sip in %d webrtc in %d", rec.Mode, rec.SIPPacketsIn, rec.WebRTCPacketsIn)
	}
	if v := metricValue(metricsText(t, r), "mediarelay_transcoded_calls_total", `mode="e2e"`); v != 1 {
		t.Fatalf("mediarelay_transcoded_calls_total{mode=e2e} = %v", v)
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// TestE2EPlainFarEnd: a trunk answering plain RTP to an end-to-end offer
// gets the call refused (488 and a Warning to the browser, BYE to the
// trunk), unless its e2e_fallback is terminate: then the relay terminates
// DTLS-SRTP and the call is a passthrough one.
func TestE2EPlainFarEnd(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		u := newSecTrunk(t, "udp", nil)
		u.plain = true
		r := startRelayWith(t, nil, nil, func(c *config.Config) {
			c.Trunks = []config.Trunk{e2eTrunk(u, "")}
		})
		p := newPhone(t, "PCMU")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := p.invite(ctx, r, "1000", []byte(p.offer()))
		if res == nil {
			t.Fatalf("invite: %v", err)
		}
		w := res.GetHeader("Warning")
		if res.StatusCode != 488 || w == nil || !strings.Contains(w.Value(), "DTLS-SRTP at the far end") {
			t.Fatalf("browser got %d, Warning %v; want 488 with the DTLS-SRTP warning", res.StatusCode, w)
		}
		waitChan(t, "BYE at the trunk", u.byes)
		if cause, code := lastEnd(t, r, 1); cause != cdr.CauseE2ENoDTLS || code != 488 {
			t.Fatalf("CDR: cause %s code %d", cause, code)
		}
	})
	t.Run("fallback-terminate", func(t *testing.T) {
		u := newSecTrunk(t, "udp", nil)
		u.plain = true
		r := startRelayWith(t, nil, nil, func(c *config.Config) {
			c.Trunks = []config.Trunk{e2eTrunk(u, mediaplan.E2EFallbackTerminate)}
		})
		p := newPhone(t, "PCMU")
		p.call(r, "1000")
		callID := activeCallID(t, r)
		echoFrames(t, p, 60)
		p.hangup()
		waitChan(t, "BYE at the trunk", u.byes)
		if rec := callRecord(t, r, callID); rec.Mode != mediaplan.ModePassthrough {
			t.Fatalf("CDR mode %q, want passthrough", rec.Mode)
		}
	})
}

// TestE2EInboundDTLSCaller: a trunk offers DTLS-SRTP to a user whose
// media_mode is e2e. The browser is offered the trunk's fingerprint, the
// trunk is answered with the browser's, the trunk's own DTLS handshake
// (with the browser, through the relay) keys SRTP, and audio goes both ways
// (the browser echoes it) with no key exported by the relay. With ICE in
// its offer, the trunk's c=/m= names a port it does not send from: only its
// connectivity check to the relay's ICE-lite RTP port lets its media in.
func TestE2EInboundDTLSCaller(t *testing.T) {
	t.Run("sdp-address", func(t *testing.T) { e2eInbound(t, false) })
	t.Run("ice", func(t *testing.T) { e2eInbound(t, true) })
}

func e2eInbound(t *testing.T, withICE bool) {
	u := newTrunkUAC(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), withCarrier(u), func(c *config.Config) {
		c.Users[0].MediaMode = mediaplan.ModeE2E
	}))
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	keys := media.KeysExported()

	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	fp, _ := media.Fingerprint(cert, "sha-256")
	const ssrc = 4242
	offer := sdp.Offer{SessionID: 77, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"),
		Port: u.rtpConn.LocalAddr().(*net.UDPAddr).Port, Proto: "UDP/TLS/RTP/SAVP",
		Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.DTMF8k},
		Extra:  []string{"fingerprint:" + fp, "setup:actpass", "rtcp-mux", fmt.Sprintf("ssrc:%d cname:carrier", ssrc)}}
	const trunkUfrag, trunkPwd = "trunkufrag", "trunkpassword0123456789"
	if withICE {
		decoy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer decoy.Close()
		offer.Port = decoy.LocalAddr().(*net.UDPAddr).Port // where it does not send from
		offer.Extra = append(offer.Extra, "ice-ufrag:"+trunkUfrag, "ice-pwd:"+trunkPwd,
			fmt.Sprintf("candidate:1 1 udp 2130706431 127.0.0.1 %d typ host", u.rtpConn.LocalAddr().(*net.UDPAddr).Port))
	}
	body := offer.Marshal()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host, port := splitHostPort(r.SIPUDPAddr().String())
	from := &sip.FromHeader{Address: sip.Uri{User: "+15557654321", Host: "carrier.example"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	dcs, err := u.dua.Invite(ctx, sip.Uri{User: "alice", Host: host, Port: port}, body, from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dcs.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("trunk's INVITE: %v", err)
	}
	_ = dcs.Ack(ctx)
	u.mu.Lock()
	u.dcs = dcs
	u.mu.Unlock()
	callID := activeCallID(t, r)

	ansBody := string(dcs.InviteResponse.Body())
	_, ans, err := sdp.Parse([]byte(ansBody))
	if err != nil {
		t.Fatal(err)
	}
	browserFP, setup, err := media.RemoteDTLS(ansBody)
	if err != nil || ans.Proto != "UDP/TLS/RTP/SAVP" {
		t.Fatalf("trunk's answer: proto %s, %v\n%s", ans.Proto, err, ansBody)
	}
	p.mu.Lock()
	pc := p.pcs[len(p.pcs)-1]
	inv := p.invites[0]
	p.mu.Unlock()
	if want := sdpFingerprint(t, pc.LocalDescription().SDP); browserFP != want {
		t.Fatalf("trunk was answered fingerprint %s, the browser's is %s", browserFP, want)
	}
	if got := sdpFingerprint(t, string(inv.Body())); got != fp {
		t.Fatalf("browser was offered fingerprint %s, the trunk's is %s", got, fp)
	}
	hash, value, _ := strings.Cut(browserFP, " ")
	relay := netip.AddrPortFrom(ans.Addr, uint16(ans.Port))
	if withICE {
		iceCheckFrom(t, u.rtpConn, relay, ansBody, trunkUfrag)
	}
	cfg, err := media.DTLSKeys(ctx, u.rtpConn, media.DTLSOptions{Certificate: cert, Client: setup == sdp.SetupPassive,
		Remote: relay, FingerprintHash: hash, Fingerprint: value, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatalf("the trunk's handshake with the browser: %v", err)
	}
	enc, _ := srtpContextProfile(cfg.Profile, cfg.LocalKey)
	dec, _ := srtpContextProfile(cfg.Profile, cfg.RemoteKey)

	got := make(chan string, 200)
	go func() { // until the socket closes at cleanup
		buf := make([]byte, 1500)
		for {
			n, err := u.rtpConn.Read(buf)
			if err != nil {
				return
			}
			if n < 2 || buf[0] < 128 || buf[0] > 191 || media.IsRTCP(buf[:n]) {
				continue
			}
			plain, err := dec.DecryptRTP(nil, buf[:n], nil)
			var pkt rtp.Packet
			if err == nil && pkt.Unmarshal(plain) == nil {
				select {
				case got <- string(pkt.Payload):
				default:
				}
			}
		}
	}()
	sent := map[string]bool{}
	for i := range 60 {
		payload := make([]byte, 160)
		copy(payload, fmt.Sprintf("e2e-in-%04d", i))
		sent[string(payload)] = true
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: uint32(i * 160), SSRC: ssrc}, Payload: payload}
		b, _ := pkt.Marshal()
		out, err := enc.EncryptRTP(nil, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = u.rtpConn.WriteToUDPAddrPort(out, relay)
		time.Sleep(20 * time.Millisecond)
	}
	matched := 0
collect:
	for matched < 60 {
		select {
		case s := <-got:
			if sent[s] {
				matched++
			}
		case <-time.After(time.Second): // quiet: the echo is over
			break collect
		}
	}
	if matched < 50 {
		t.Fatalf("only %d of 60 frames came back through the browser", matched)
	}
	if n := media.KeysExported(); n != keys {
		t.Fatalf("the relay exported %d SRTP keys during an end-to-end call", n-keys)
	}
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	if rec := callRecord(t, r, callID); rec.Mode != mediaplan.ModeE2E || rec.Direction != "inbound" {
		t.Fatalf("CDR: mode %q direction %q", rec.Mode, rec.Direction)
	}
}

// TestE2EInboundPlainOfferRefused: a plain RTP offer into a user whose
// media_mode is e2e gets 488 with the Warning; the browser never rings.
func TestE2EInboundPlainOfferRefused(t *testing.T) {
	r, u := inboundRelay(t, func(c *config.Config) { c.Users[0].MediaMode = mediaplan.ModeE2E })
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice")
	if err != nil {
		t.Fatal(err)
	}
	w := res.GetHeader("Warning")
	if res.StatusCode != 488 || w == nil || !strings.Contains(w.Value(), "DTLS-SRTP at the far end") {
		t.Fatalf("trunk got %d, Warning %v", res.StatusCode, w)
	}
	p.mu.Lock()
	rang := len(p.invites)
	p.mu.Unlock()
	if rang != 0 {
		t.Fatalf("the browser was rung %d times", rang)
	}
}

// TestE2EBaresipDTLS: baresip answers with its own DTLS-SRTP
// (mediaenc=dtls_srtp) on an e2e trunk. Its tones reach the phone, the
// phone's reach baresip, the phone's DTLS peer is baresip's certificate
// (the fingerprint baresip announced), and the relay exports no key.
func TestE2EBaresipDTLS(t *testing.T) {
	const seconds = 4
	pki := newPKI(t)
	source := filepath.Join(t.TempDir(), "tones.wav")
	f, err := os.Create(source)
	if err != nil {
		t.Fatal(err)
	}
	if err := tone.WriteWAV(f, tone.Generate([]float64{400, 1000}, 8000, 8000*60, 0.25), 8000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b := startBaresipEnc(t, pki, "1000", source, "dtls_srtp")
	r := startRelayWith(t, pki, nil, func(c *config.Config) {
		tr := b.trunk(mediaplan.ModeE2E)
		tr.SRTP = mediaplan.SRTPOff
		c.Trunks = []config.Trunk{tr}
	})
	keys := media.KeysExported()
	p := newPhone(t, "PCMU")
	p.call(r, "1000")

	baresipFP := sdpFingerprint(t, p.pc.RemoteDescription().SDP)
	der := p.pc.GetSenders()[0].Transport().GetRemoteCertificate()
	if got, _ := media.Fingerprint(tls.Certificate{Certificate: [][]byte{der}}, "sha-256"); !strings.EqualFold(got, baresipFP) {
		t.Fatalf("the phone's DTLS peer presented %s, the answer announced %s", got, baresipFP)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.sendPCMUTone(t, tone.Generate([]float64{400, 1000}, 8000, 8000*seconds, 0.25))
	}()
	heard := p.collectFor(seconds * time.Second)
	wg.Wait()
	if n := media.KeysExported(); n != keys {
		t.Errorf("the relay exported %d SRTP keys during an end-to-end call", n-keys)
	}
	p.hangup()

	var pcm []int16
	for _, pkt := range heard {
		if pkt.PayloadType == 0 {
			s := make([]int16, len(pkt.Payload))
			transcode.MulawDecode(s, pkt.Payload)
			pcm = append(pcm, s...)
		}
	}
	if len(pcm) < 8000*2 {
		t.Errorf("the phone heard %d samples from baresip (%d packets)", len(pcm), len(heard))
	} else {
		for _, freq := range []float64{400, 1000} {
			if !tone.Detect(pcm[4000:], 8000, freq) {
				t.Errorf("%v Hz from baresip not heard at the phone", freq)
			}
		}
	}
	waitFor(t, "relay cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	var rec []int16
	var recRate int
	waitFor(t, "baresip's recording", 5*time.Second, func() bool {
		var ok bool
		rec, recRate, ok = b.recording(t)
		return ok
	})
	if len(rec) < recRate*2 {
		t.Errorf("baresip recorded %d samples", len(rec))
	} else {
		for _, freq := range []float64{400, 1000} {
			if !tone.Detect(rec[recRate/2:], recRate, freq) {
				t.Errorf("%v Hz from the phone not heard by baresip", freq)
			}
		}
	}
}

// TestE2EBrowser: headless Chromium (the relay's softphone page) calls an
// e2e trunk whose peer runs DTLS-SRTP itself and echoes. The tones come
// back; the fingerprint Chromium's DTLS handshake was checked against (its
// remote description, and the remote certificate in getStats() where
// Chromium reports one) is the trunk peer's, and the trunk decrypted
// Chromium's media with keys of its own handshake; the relay exports no
// key.
func TestE2EBrowser(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	tones, quiet := []float64{400, 1000}, 2500.0
	wav := filepath.Join(t.TempDir(), "tones.wav")
	if err := browsertest.WriteToneWAV(wav, tones, 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()

	u := newSecTrunk(t, "udp", nil)
	u.dtlsMode, u.ownSSRC = true, 0x5eed0002
	r := startRelayWith(t, nil, nil, func(c *config.Config) {
		c.Trunks = []config.Trunk{e2eTrunk(u, "")}
	})
	keys := media.KeysExported()
	res, err := browser.Call(ctx, browsertest.Options{
		PageURL: "http://" + r.HTTPAddr().String() + "/", Target: "sip:1555@127.0.0.1", Hold: 4 * time.Second, Freqs: append(tones, quiet),
	})
	if err != nil {
		t.Fatalf("call: %v (log: %v)", err, res.Log)
	}
	t.Logf("tone levels (dB over noise floor): %v; stats %v", res.ToneDB, res.Stats)
	floor := res.ToneDB[quiet]
	for _, f := range tones {
		if db := res.ToneDB[f]; db < 20 || db < floor+15 {
			t.Errorf("%v Hz came back at %.1f dB (quiet %v Hz at %.1f dB): not detected", f, db, quiet, floor)
		}
	}
	if res.RelayMode != mediaplan.ModeE2E {
		t.Errorf("the relay named mode %q", res.RelayMode)
	}
	peerFP := *u.dtlsFP.Load()
	if got, _ := res.Stats["remoteFingerprint"].(string); !strings.EqualFold(got, peerFP) {
		t.Errorf("Chromium verified its DTLS peer against %q, the trunk's certificate is %q", got, peerFP)
	}
	if got, ok := res.Stats["remoteCertFingerprint"].(string); ok && !strings.EqualFold(got, peerFP) {
		t.Errorf("Chromium's DTLS peer presented %q, the trunk's certificate is %q", got, peerFP)
	}
	if u.decOK.Load() < 40 {
		t.Errorf("the trunk decrypted only %d packets from Chromium", u.decOK.Load())
	}
	if n := media.KeysExported(); n != keys {
		t.Errorf("the relay exported %d SRTP keys during an end-to-end call", n-keys)
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// iceCheckFrom sends, from conn, a connectivity check to the relay's
// ICE-lite port with the credentials of its SDP, and waits for the
// authenticated success response.
func iceCheckFrom(t *testing.T, conn *net.UDPConn, relay netip.AddrPort, relaySDP, ourUfrag string) {
	t.Helper()
	_, a, err := sdp.Parse([]byte(relaySDP))
	if err != nil {
		t.Fatal(err)
	}
	var ufrag, pwd string
	for _, at := range a.Attrs {
		switch at.Key {
		case "ice-ufrag":
			ufrag = at.Value
		case "ice-pwd":
			pwd = at.Value
		}
	}
	if ufrag == "" || pwd == "" || !strings.Contains(relaySDP, "a=ice-lite") {
		t.Fatalf("the relay's answer has no ICE-lite credentials:\n%s", relaySDP)
	}
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(ufrag+":"+ourUfrag),
		ice.AttrControlling(1), stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if _, err := conn.WriteToUDPAddrPort(req.Raw, relay); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // failsafe only
	defer conn.SetReadDeadline(time.Time{})
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no answer to the connectivity check: %v", err)
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if res.Decode() != nil || res.TransactionID != req.TransactionID {
			continue
		}
		if res.Type != stun.BindingSuccess || stun.NewShortTermIntegrity(pwd).Check(res) != nil {
			t.Fatalf("the check was answered %s", res.Type)
		}
		return
	}
}
