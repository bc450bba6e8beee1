package signaling

import (
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// TestDTLSSRTP: a DTLS-SRTP SIP leg (no ICE) against a pion/dtls peer that
// takes the active role; audio both ways, in passthrough and transcode.
func TestDTLSSRTP(t *testing.T) {
	for _, tc := range []struct{ name, mode, phone string }{
		{"passthrough", mediaplan.ModePassthrough, "PCMU"},
		{"transcode", mediaplan.ModeTranscode, "opus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newSecTrunk(t, "udp", nil)
			u.dtlsMode = true
			r := startRelayWith(t, nil, nil, func(c *config.Config) {
				c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPDTLS, tc.mode, "PCMU")}
			})
			p := newPhone(t, tc.phone)
			p.call(r, "1000")
			_, offer, _ := sdp.Parse(u.lastInvite().Body())
			if offer.Proto != "UDP/TLS/RTP/SAVP" || len(offer.Crypto) != 0 {
				t.Fatalf("offer: proto %s, %d crypto lines", offer.Proto, len(offer.Crypto))
			}
			if tc.mode == mediaplan.ModePassthrough {
				echoFrames(t, p, 60)
			} else if n := countBack(t, p, 60); n < 40 {
				t.Fatalf("only %d packets came back", n)
			}
			if u.decOK.Load() < 40 || u.decFail.Load() != 0 {
				t.Fatalf("trunk decrypted %d packets, %d failed", u.decOK.Load(), u.decFail.Load())
			}
			p.hangup()
			waitChan(t, "BYE at the trunk", u.byes)
			waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
}

// TestDTLSWrongFingerprint: a peer whose certificate does not match its
// a=fingerprint fails the call; no media is forwarded either way.
func TestDTLSWrongFingerprint(t *testing.T) {
	u := newSecTrunk(t, "udp", nil)
	u.dtlsMode, u.wrongFP = true, true
	log, buf := bufLogger()
	r := startRelayWith(t, nil, log, func(c *config.Config) {
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPDTLS, mediaplan.ModePassthrough, "PCMU")}
	})
	p := newPhone(t, "PCMU")
	if code := callStatus(t, p, r, "1000"); code != 488 {
		t.Fatalf("browser got %d, want 488", code)
	}
	waitChan(t, "BYE at the trunk", u.byes)
	waitFor(t, "cause dtls_failed", 5*time.Second, func() bool {
		return metricValue(metricsText(t, r), "mediarelay_calls_total", `cause="dtls_failed"`) == 1
	})
	if u.decOK.Load() != 0 {
		t.Fatalf("the relay sent %d SRTP packets to an unverified peer", u.decOK.Load())
	}
	if !strings.Contains(buf.String(), "fingerprint") {
		t.Fatalf("log does not say the fingerprint did not match:\n%s", buf.String())
	}
}
