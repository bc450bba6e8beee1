package signaling

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// e2eTrunk is the relay's entry for u in end-to-end mode.
func e2eTrunk(u *secTrunk, fallback string) config.Trunk {
	tr := u.trunkConfig(SRTPOff, ModeE2E, "PCMU")
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
	for _, c := range r.callList() {
		web, sipLeg = liveWebLeg(c), c.sipLeg()
	}
	if web == nil || sipLeg == nil {
		t.Fatal("no live call")
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
	if rec := callRecord(t, r, callID); rec.Mode != ModeE2E || rec.SIPPacketsIn < 40 || rec.WebRTCPacketsIn < 40 {
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
		if cause, code := lastEnd(t, r, 1); cause != endE2ENoDTLS || code != 488 {
			t.Fatalf("CDR: cause %s code %d", cause, code)
		}
	})
	t.Run("fallback-terminate", func(t *testing.T) {
		u := newSecTrunk(t, "udp", nil)
		u.plain = true
		r := startRelayWith(t, nil, nil, func(c *config.Config) {
			c.Trunks = []config.Trunk{e2eTrunk(u, E2EFallbackTerminate)}
		})
		p := newPhone(t, "PCMU")
		p.call(r, "1000")
		callID := activeCallID(t, r)
		echoFrames(t, p, 60)
		p.hangup()
		waitChan(t, "BYE at the trunk", u.byes)
		if rec := callRecord(t, r, callID); rec.Mode != ModePassthrough {
			t.Fatalf("CDR mode %q, want passthrough", rec.Mode)
		}
	})
}
