package signaling

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
	"github.com/mediarelay/mediarelay/transcode/tone"
)

// answerWith makes the trunk answer INVITEs with the first of codecs
// offered.
func (u *trunkUAS) answerWith(codecs ...string) {
	u.mu.Lock()
	u.codecs = codecs
	u.mu.Unlock()
}

// lastDialog is the trunk's newest dialog.
func (u *trunkUAS) lastDialog(t *testing.T) *sipgo.DialogServerSession {
	t.Helper()
	u.bookMu.Lock()
	defer u.bookMu.Unlock()
	if len(u.dialogs) == 0 {
		t.Fatal("the trunk has no dialog")
	}
	return u.dialogs[len(u.dialogs)-1]
}

// reoffer sends the relay an offer on the trunk's dialog, in an INVITE
// (ACKed when answered 200) or an UPDATE, for the trunk's media port with
// codecs in direction dir; it returns the relay's answer.
func (u *trunkUAS) reoffer(t *testing.T, method sip.RequestMethod, version uint64, dir string, codecs ...sdp.Codec) *sip.Response {
	t.Helper()
	d := u.lastDialog(t)
	_, mine, err := sdp.Parse(d.InviteResponse.Body())
	if err != nil {
		t.Fatal(err)
	}
	body := sdp.Offer{SessionID: 1, Version: version, Addr: netip.MustParseAddr("127.0.0.1"), Port: mine.Port, Direction: dir, Codecs: codecs}.Marshal()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target := d.InviteRequest.Contact().Address
	var req *sip.Request
	var res *sip.Response
	for {
		req = sip.NewRequest(method, *target.Clone())
		req.SetBody(body)
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res, err = d.Do(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if res.StatusCode != 491 {
			break
		}
		// Glare with an offer of the relay's on this dialog, retried a
		// little later as RFC 3261 section 14.1 says.
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still 491 after retrying", method)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if method == sip.INVITE && res.StatusCode == 200 {
		ack := sip.NewRequest(sip.ACK, *target.Clone())
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
		if err := d.WriteRequest(ack); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	return res
}

// drain empties the trunk's capture.
func (u *trunkUAS) drain() {
	for len(u.capture) > 0 {
		<-u.capture
	}
}

// captured returns the RTP the trunk received since the last drain, by
// payload type.
func (u *trunkUAS) captured() map[uint8][]*rtp.Packet {
	out := map[uint8][]*rtp.Packet{}
	for len(u.capture) > 0 {
		var p rtp.Packet
		if p.Unmarshal(<-u.capture) == nil {
			out[p.PayloadType] = append(out[p.PayloadType], &p)
		}
	}
	return out
}

// checkAnswer asserts the relay's answer carries exactly codec (with the
// offered payload type) and telephone-event ev, in direction dir, with an
// SDP version above prev; it returns the version.
func checkAnswer(t *testing.T, res *sip.Response, codec, ev sdp.Codec, dir string, prev uint64) uint64 {
	t.Helper()
	if res.StatusCode != 200 {
		t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
	}
	_, a, err := sdp.Parse(res.Body())
	if err != nil {
		t.Fatalf("answer: %v\n%s", err, res.Body())
	}
	want := []sdp.Codec{codec, ev}
	if len(a.Codecs) != 2 || !a.Codecs[0].Is(codec.Name) || a.Codecs[0].PT != codec.PT || !a.Codecs[1].Is(ev.Name) || a.Codecs[1].PT != ev.PT {
		t.Fatalf("answer offers %+v, want %+v:\n%s", a.Codecs, want, res.Body())
	}
	if got := normDir(a); got != dir {
		t.Fatalf("answer direction %s, want %s", got, dir)
	}
	v := sdp.Version(string(res.Body()))
	if v <= prev {
		t.Fatalf("answer's SDP version %d does not follow %d", v, prev)
	}
	return v
}

// sendTrunkEvent sends one RFC 4733 digit from the trunk's media socket
// with payload type pt: three updates and three end packets.
func (u *trunkUAS) sendTrunkEvent(t *testing.T, pt uint8, event byte) {
	t.Helper()
	inv := u.lastInvite()
	_, relay, err := sdp.Parse(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	conn := u.conns[len(u.conns)-1]
	u.mu.Unlock()
	dst := netip.AddrPortFrom(relay.Addr, uint16(relay.Port))
	for i := range 6 {
		dur := uint16(160 * min(i+1, 4))
		end := byte(10)
		if i >= 3 {
			end |= 0x80
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, Marker: i == 0, SequenceNumber: uint16(30000 + i), Timestamp: 777000, SSRC: 0xd7f},
			Payload: []byte{event, end, byte(dur >> 8), byte(dur)}}
		b, _ := pkt.Marshal()
		if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// callRecord waits for the final CDR of callID.
func callRecord(t *testing.T, r *Relay, callID string) cdr.Record {
	t.Helper()
	var rec cdr.Record
	waitFor(t, "cdr", 5*time.Second, func() bool {
		var err error
		rec, err = r.CDR().Query(context.Background(), callID)
		return err == nil && rec.EndCause != cdr.CauseInProgress
	})
	return rec
}

var dtmf96 = sdp.Codec{Name: "telephone-event", PT: 96, Clock: 8000, Channels: 1, Fmtp: "0-16"}

// TestTrunkChangesCodec: a trunk moves a call to another codec with a
// re-INVITE or an UPDATE. The relay answers with the new codec and keeps
// the browser leg as it is; the audio must still get through both ways,
// now in the trunk's new codec, and the CDR must name it.
func TestTrunkChangesCodec(t *testing.T) {
	ref := tone.Generate([]float64{400, 1000}, 48000, 48000*2, 0.25)

	// Opus browser, trunk from PCMU to PCMA or G.722: a new Opus bridge.
	for _, tc := range []struct {
		name   string
		method sip.RequestMethod
		codec  string
	}{
		{"opus/PCMU-to-PCMA/re-INVITE", sip.INVITE, "PCMA"},
		{"opus/PCMU-to-G722/re-INVITE", sip.INVITE, "G722"},
		{"opus/PCMU-to-PCMA/UPDATE", sip.UPDATE, "PCMA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTrunkUAS(t)
			u.answerWith("PCMU")
			u.setCapture(make(chan []byte, 2000))
			r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU", "PCMA", "G722"))
			p := newPhone(t, "opus")
			p.call(r, "1000")
			callID := activeCallID(t, r)
			first := sdp.Version(string(u.lastInvite().Body()))

			// The trunk renumbers telephone-event too (101 → 96).
			codec := mediaplan.SIPCodecs[strings.ToLower(tc.codec)]
			ver := checkAnswer(t, u.reoffer(t, tc.method, 2, "sendrecv", codec, dtmf96), codec, dtmf96, "sendrecv", first)

			u.drain()
			p.sendOpusTone(t, ref)
			back := decodeOpus(t, p.collect(time.Second))
			got := u.captured()
			if n := len(got[0]); n > 0 {
				t.Errorf("the trunk still got %d PCMU packets after moving to %s", n, tc.codec)
			}
			var raw [][]byte
			for _, pkt := range got[codec.PT] {
				b, _ := pkt.Marshal()
				raw = append(raw, b)
			}
			atTrunk, rate := decodeSIP(t, tc.codec, raw)
			atTrunk = atTrunk[min(len(atTrunk), rate/2):]
			for _, f := range []float64{400, 1000} {
				if !tone.Detect(atTrunk, rate, f) {
					t.Errorf("%v Hz not detected at the trunk in %s (%d samples)", f, tc.codec, len(atTrunk))
				}
				if len(back) < 48000 || !tone.Detect(back[24000:], 48000, f) {
					t.Errorf("%v Hz not detected back at the browser from %s (%d samples)", f, tc.codec, len(back))
				}
			}
			refAtRate := tone.Generate([]float64{400, 1000}, rate, rate, 0.25)
			if snr := tone.SNR(refAtRate, atTrunk[:min(len(atTrunk), rate)]); snr < 10 {
				t.Errorf("Opus → %s after the change: SNR %.1f dB, want ≥ 10 dB", tc.codec, snr)
			}

			// telephone-event from the trunk, in its new numbering, reaches
			// the browser.
			u.sendTrunkEvent(t, dtmf96.PT, 5)
			events := 0
			for _, pkt := range p.collect(500 * time.Millisecond) {
				if pkt.PayloadType != 111 && len(pkt.Payload) == 4 && pkt.Payload[0] == 5 {
					events++
				}
			}
			if events < 3 {
				t.Errorf("the browser got %d packets of the trunk's digit sent as PT 96", events)
			}

			// Hold and resume keep the new codec, and so does the audio.
			ver = checkAnswer(t, u.reoffer(t, tc.method, 3, "sendonly", codec, dtmf96), codec, dtmf96, "recvonly", ver)
			checkAnswer(t, u.reoffer(t, tc.method, 4, "sendrecv", codec, dtmf96), codec, dtmf96, "sendrecv", ver)
			u.drain()
			p.sendOpusTone(t, ref[:48000])
			p.collect(300 * time.Millisecond)
			got = u.captured()
			raw = raw[:0]
			for _, pkt := range got[codec.PT] {
				b, _ := pkt.Marshal()
				raw = append(raw, b)
			}
			if pcm, rate := decodeSIP(t, tc.codec, raw); len(got[0]) > 0 || len(pcm) < rate/2 || !tone.Detect(pcm[rate/4:], rate, 1000) {
				t.Errorf("after hold and resume: %d %s packets (tone lost) and %d PCMU packets", len(raw), tc.codec, len(got[0]))
			}

			p.hangup()
			rec := callRecord(t, r, callID)
			if rec.Mode != mediaplan.ModeTranscode || rec.SIPCodec != tc.codec || rec.WebRTCCodec != "opus" {
				t.Errorf("CDR says mode %s, SIP codec %s, WebRTC codec %s; want transcode, %s, opus", rec.Mode, rec.SIPCodec, rec.WebRTCCodec, tc.codec)
			}
			if n := sumCounter(t, r.m.TranscodedCalls, "mode", mediaplan.ModeTranscode); n != 1 {
				t.Errorf("transcoded calls counted %d times", n)
			}
		})
	}

	// Opus browser on a PCMU trunk; the trunk moves to Opus: the relay
	// stops transcoding and passes the browser's packets through as they are.
	t.Run("opus/PCMU-to-opus", func(t *testing.T) {
		u := newTrunkUAS(t)
		u.answerWith("PCMU")
		r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU", "opus"))
		p := newPhone(t, "opus")
		p.call(r, "1000")
		callID := activeCallID(t, r)
		opus := mediaplan.SIPCodecs["opus"]
		checkAnswer(t, u.reoffer(t, sip.INVITE, 2, "sendrecv", opus, mediaplan.DTMF8k), opus, mediaplan.DTMF8k, "sendrecv", 0)
		p.collect(300 * time.Millisecond) // whatever the bridge still had in flight
		checkEcho(t, p, 100)
		p.hangup()
		if rec := callRecord(t, r, callID); rec.Mode != mediaplan.ModePassthrough || rec.SIPCodec != "opus" {
			t.Errorf("CDR says mode %s, SIP codec %s; want passthrough, opus", rec.Mode, rec.SIPCodec)
		}
	})

	// A PCMU browser passed through to a PCMU trunk; the trunk moves to
	// PCMA: each byte is converted on the way, both ways, and the tone
	// survives.
	t.Run("PCMU-passthrough/to-PCMA", func(t *testing.T) {
		u := newTrunkUAS(t)
		u.answerWith("PCMU")
		u.setCapture(make(chan []byte, 2000))
		r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU", "PCMA"))
		p := newPhone(t, "PCMU", "PCMA")
		p.call(r, "1000")
		callID := activeCallID(t, r)
		pcma := mediaplan.SIPCodecs["pcma"]
		checkAnswer(t, u.reoffer(t, sip.INVITE, 2, "sendrecv", pcma, mediaplan.DTMF8k), pcma, mediaplan.DTMF8k, "sendrecv", 0)

		// Bytes: the trunk must get the A-law code of each μ-law sample,
		// and the browser the μ-law code of each A-law sample echoed.
		u.drain()
		sent := p.sendFrames(50, 160)
		back := p.collect(time.Second)
		atTrunk := map[string]bool{}
		got := u.captured()
		for _, pkt := range got[8] {
			atTrunk[string(pkt.Payload)] = true
		}
		browserGot := map[string]bool{}
		for _, pkt := range back {
			if pkt.PayloadType == 0 {
				browserGot[string(pkt.Payload)] = true
			}
		}
		trunkOK, backOK := 0, 0
		for _, s := range sent {
			pcm := make([]int16, len(s))
			transcode.MulawDecode(pcm, s)
			alaw := make([]byte, len(s))
			transcode.AlawEncode(alaw, pcm)
			if atTrunk[string(alaw)] {
				trunkOK++
			}
			transcode.AlawDecode(pcm, alaw)
			ulaw := make([]byte, len(s))
			transcode.MulawEncode(ulaw, pcm)
			if browserGot[string(ulaw)] {
				backOK++
			}
		}
		if len(got[0]) > 0 || trunkOK < 45 || backOK < 45 {
			t.Fatalf("of 50 PCMU frames, the trunk got %d as PCMA (and %d packets still PCMU), the browser %d back as PCMU", trunkOK, len(got[0]), backOK)
		}

		// Audio: a tone from the browser arrives as A-law and comes back.
		tone8k := tone.Generate([]float64{400, 1000}, 8000, 8000*2, 0.25)
		u.drain()
		p.sendPCMUTone(t, tone8k)
		back = p.collect(time.Second)
		var raw [][]byte
		for _, pkt := range u.captured()[8] {
			b, _ := pkt.Marshal()
			raw = append(raw, b)
		}
		atTrunkPCM, _ := decodeSIP(t, "PCMA", raw)
		var fromTrunk []*rtp.Packet
		for _, pkt := range back {
			if pkt.PayloadType == 0 {
				fromTrunk = append(fromTrunk, pkt)
			}
		}
		var rawBack [][]byte
		for _, pkt := range fromTrunk {
			b, _ := pkt.Marshal()
			rawBack = append(rawBack, b)
		}
		backPCM, _ := decodeSIP(t, "PCMU", rawBack)
		if snr := tone.SNR(tone8k[:8000], atTrunkPCM); snr < 25 {
			t.Errorf("μ-law tone at the A-law trunk: SNR %.1f dB, want ≥ 25", snr)
		}
		if snr := tone.SNR(tone8k[:8000], backPCM); snr < 25 {
			t.Errorf("the tone back at the browser: SNR %.1f dB, want ≥ 25", snr)
		}
		p.hangup()
		if rec := callRecord(t, r, callID); rec.Mode != mediaplan.ModeTranscode || rec.SIPCodec != "PCMA" || rec.WebRTCCodec != "PCMU" {
			t.Errorf("CDR says mode %s, SIP codec %s, WebRTC codec %s; want transcode, PCMA, PCMU", rec.Mode, rec.SIPCodec, rec.WebRTCCodec)
		}
	})

	// A trunk in mode passthrough may not move away from the browser's
	// codec: 488, and the call goes on in PCMU.
	t.Run("passthrough-mode/refused", func(t *testing.T) {
		u := newTrunkUAS(t)
		u.answerWith("PCMU")
		u.setCapture(make(chan []byte, 2000))
		r := startRelay(t, withTrunk(u, mediaplan.ModePassthrough, "PCMU", "PCMA"))
		p := newPhone(t, "PCMU", "PCMA")
		p.call(r, "1000")
		callID := activeCallID(t, r)
		if res := u.reoffer(t, sip.INVITE, 2, "sendrecv", mediaplan.SIPCodecs["pcma"], mediaplan.DTMF8k); res.StatusCode != 488 {
			t.Fatalf("codec change in mode passthrough answered %d, want 488", res.StatusCode)
		}
		u.drain()
		checkEcho(t, p, 50)
		if got := u.captured(); len(got[0]) < 45 || len(got[8]) > 0 {
			t.Fatalf("after the refusal the trunk got %d PCMU and %d PCMA packets", len(got[0]), len(got[8]))
		}
		// The next offer with the old codec is fine, and answered with it.
		pcmu := mediaplan.SIPCodecs["pcmu"]
		checkAnswer(t, u.reoffer(t, sip.INVITE, 3, "sendrecv", pcmu, mediaplan.DTMF8k), pcmu, mediaplan.DTMF8k, "sendrecv", 0)
		p.hangup()
		if rec := callRecord(t, r, callID); rec.Mode != mediaplan.ModePassthrough || rec.SIPCodec != "PCMU" {
			t.Errorf("CDR says mode %s, SIP codec %s; want passthrough, PCMU", rec.Mode, rec.SIPCodec)
		}
	})
}

// checkEcho sends n frames from the phone and requires nine in ten back
// byte for byte.
func checkEcho(t *testing.T, p *phone, n int) {
	t.Helper()
	sent := p.sendFrames(n, 160)
	want := map[string]bool{}
	for _, s := range sent {
		want[string(s)] = true
	}
	matched := 0
	for _, pkt := range p.collect(time.Second) {
		if want[string(pkt.Payload)] {
			matched++
		}
	}
	if matched < n*9/10 {
		t.Fatalf("only %d of %d frames came back", matched, n)
	}
}

// TestTrunkChangesCodecInbound: on a call from the trunk to a PCMU
// browser, the trunk moves to PCMA and renumbers telephone-event; its
// audio still reaches the browser and comes back, and a digit it sends as
// SIP INFO reaches the browser as telephone-event.
func TestTrunkChangesCodecInbound(t *testing.T) {
	_, u, p := answeredCall(t, func(c *config.Config) { c.Media.Timeout = 30 * time.Second })
	body := strings.Replace(string(u.sdp(2, "sendrecv")), "RTP/AVP 0 101", "RTP/AVP 8 96", 1)
	body = strings.Replace(body, "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", 1)
	body = strings.Replace(body, "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101", "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	target := u.dcs.InviteResponse.Contact().Address
	req := sip.NewRequest(sip.UPDATE, *target.Clone())
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := u.dcs.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, res, mediaplan.SIPCodecs["pcma"], dtmf96, "sendrecv", 0)

	// PCMA from the trunk: the browser echoes it (as PCMU), the trunk gets
	// it back as PCMA.
	u.pt = 8
	if got := u.tonesBack(t); !got {
		t.Fatal("the trunk's PCMA tone did not come back")
	}
	p.set(func(p *regPhone) { p.pauseEc = true })
	go u.echoCheck(40) // the trunk's audio clocks the events
	time.Sleep(200 * time.Millisecond)
	if code := u.info(t, "application/dtmf-relay", "Signal=7\r\nDuration=200\r\n"); code != 200 {
		t.Fatalf("INFO answered %d", code)
	}
	events := 0
	deadline := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case pkt := <-p.rx:
			if pkt.PayloadType == 101 && len(pkt.Payload) == 4 && pkt.Payload[0] == 7 {
				events++
			}
		case <-deadline:
			done = true
		}
	}
	if events < 8 {
		t.Fatalf("the browser got %d telephone-event packets of the INFO digit", events)
	}
	_ = u.bye()
}

// tonesBack sends a 400 Hz + 1 kHz tone from the trunk in its payload type
// (PCMU 0 or PCMA 8) and reports whether it came back in that codec.
func (u *trunkUAC) tonesBack(t *testing.T) bool {
	t.Helper()
	pcm := tone.Generate([]float64{400, 1000}, 8000, 8000*2, 0.25)
	got := make(chan []byte, 200)
	go func() {
		buf := make([]byte, 1500)
		for {
			_ = u.rtpConn.SetReadDeadline(time.Now().Add(time.Second))
			n, err := u.rtpConn.Read(buf)
			if err != nil {
				close(got)
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) == nil && p.PayloadType == u.pt {
				got <- append([]byte(nil), p.Payload...)
			}
		}
	}()
	payload := make([]byte, 160)
	for i := 0; i+160 <= len(pcm); i += 160 {
		if u.pt == 8 {
			transcode.AlawEncode(payload, pcm[i:i+160])
		} else {
			transcode.MulawEncode(payload, pcm[i:i+160])
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: u.pt, SequenceNumber: uint16(500 + i/160), Timestamp: uint32(i), SSRC: 0xcafe}, Payload: payload}
		b, _ := pkt.Marshal()
		_, _ = u.rtpConn.WriteToUDPAddrPort(b, u.remote)
		time.Sleep(20 * time.Millisecond)
	}
	var back []int16
	for b := range got {
		s := make([]int16, len(b))
		if u.pt == 8 {
			transcode.AlawDecode(s, b)
		} else {
			transcode.MulawDecode(s, b)
		}
		back = append(back, s...)
	}
	return len(back) > 8000 && tone.Detect(back[4000:], 8000, 400) && tone.Detect(back[4000:], 8000, 1000)
}

// TestSetCodecs: the relay's SDP towards the trunk lists only the codecs
// of the plan; everything else (ptime, crypto, direction) stays.
func TestSetCodecs(t *testing.T) {
	body := "v=0\r\no=mediarelay 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 16000 RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\na=sendrecv\r\n" +
		"m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
	got := sdp.SetCodecs(body, []sdp.Codec{mediaplan.SIPCodecs["opus"], dtmf96})
	_, a, err := sdp.Parse([]byte(got))
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	if len(a.Codecs) != 2 || !a.Codecs[0].Is("opus") || a.Codecs[0].PT != 111 || a.Codecs[0].Channels != 2 || a.Codecs[0].Fmtp != mediaplan.SIPCodecs["opus"].Fmtp ||
		!a.Codecs[1].Is("telephone-event") || a.Codecs[1].PT != 96 || a.Port != 16000 || a.Ptime != 20 || len(a.Crypto) != 1 {
		t.Fatalf("audio %+v from:\n%s", a, got)
	}
	if strings.Contains(got, "PCMU") || !strings.Contains(got, "m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000") {
		t.Fatalf("rewritten:\n%s", got)
	}
}
