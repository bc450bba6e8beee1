package sipsrtp

import (
	"errors"
	"strings"
	"testing"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

func trunk(transport, policy string) *config.Trunk {
	return &config.Trunk{Name: "t", Address: "sip:127.0.0.1:5060", Transport: transport, SRTP: policy}
}

// TestOfferSDES: a required SDES offer over TLS carries keys and
// RTP/SAVP, and the call's State learns the policy at once.
func TestOfferSDES(t *testing.T) {
	var st State
	n := New(trunk("tls", mediaplan.SRTPRequired), Options{State: &st})
	var o sdp.Offer
	if err := n.Offer(&o); err != nil {
		t.Fatal(err)
	}
	if o.Proto != "RTP/SAVP" || len(o.Crypto) == 0 {
		t.Fatalf("offer proto %q, %d crypto lines", o.Proto, len(o.Crypto))
	}
	if got := st.Outcome(); got != (Outcome{Policy: mediaplan.SRTPRequired}) {
		t.Errorf("state after the offer: %+v", got)
	}
	// Narrowed to one suite, the offer and what the answer may pick agree.
	suite := strings.Fields(o.Crypto[0])[1]
	if err := n.KeepSuites(&o, func(s string) bool { return s == suite }); err != nil || len(o.Crypto) != 1 || len(n.offered) != 1 {
		t.Errorf("KeepSuites(%s): %v, %d lines, %d offered", suite, err, len(o.Crypto), len(n.offered))
	}
	if err := n.KeepSuites(&o, func(string) bool { return false }); err == nil {
		t.Error("no suite left on a required policy is not an error")
	}
}

// TestOfferRefusals: SDES keys are not offered over a plain transport,
// and an unknown policy is an error.
func TestOfferRefusals(t *testing.T) {
	var o sdp.Offer
	if err := New(trunk("udp", mediaplan.SRTPRequired), Options{}).Offer(&o); !errors.Is(err, mediaplan.ErrSDESInsecure) {
		t.Errorf("SDES over UDP: %v", err)
	}
	if err := New(trunk("udp", "sometimes"), Options{}).Offer(&o); err == nil {
		t.Error("an unknown policy was offered")
	}
	if err := New(trunk("udp", mediaplan.SRTPOff), Options{}).Offer(&o); err != nil || len(o.Crypto) != 0 || o.Proto != "" {
		t.Errorf("plain offer: %v, %+v", err, o)
	}
}

// TestAnswerRefusals: answers that do not satisfy the policy are refused
// before any key reaches the leg.
func TestAnswerRefusals(t *testing.T) {
	var rtp *media.RTPLeg // never keyed on these paths
	plain := New(trunk("tls", mediaplan.SRTPOff), Options{})
	var o sdp.Offer
	_ = plain.Offer(&o)
	if err := plain.Answer(sdp.Audio{Proto: "RTP/SAVP"}, rtp); !errors.Is(err, mediaplan.ErrSRTPBadAnswer) {
		t.Errorf("encrypted answer to a plain offer: %v", err)
	}
	if err := New(trunk("tls", mediaplan.SRTPOff), Options{}).Answer(sdp.Audio{Proto: "RTP/AVP"}, rtp); err != nil {
		t.Errorf("plain answer before any offer: %v", err)
	}
	required := New(trunk("tls", mediaplan.SRTPRequired), Options{})
	_ = required.Offer(&o)
	if err := required.Answer(sdp.Audio{Proto: "RTP/AVP"}, rtp); !errors.Is(err, mediaplan.ErrSRTPRefused) {
		t.Errorf("plain answer to a required offer: %v", err)
	}
	dtls := New(trunk("udp", mediaplan.SRTPDTLS), Options{})
	var do sdp.Offer
	if err := dtls.Offer(&do); err != nil || do.Proto != "UDP/TLS/RTP/SAVP" {
		t.Fatalf("DTLS offer: %v, proto %q", err, do.Proto)
	}
	if err := dtls.Answer(sdp.Audio{Proto: "UDP/TLS/RTP/SAVP"}, rtp); !errors.Is(err, ErrDTLS) {
		t.Errorf("DTLS answer without a fingerprint: %v", err)
	}
	if required.Outcome().Keyed || required.Outcome().Suite != "" {
		t.Errorf("a refused answer keyed the leg: %+v", required.Outcome())
	}
}

// TestStateAuthFailures: only authentication drops count, and nothing
// fails while the leg is not keyed.
func TestStateAuthFailures(t *testing.T) {
	var st State
	st.CountDrop(media.DropSRTPAuth)
	st.CountDrop("other")
	if got := st.authFails.Load(); got != 1 {
		t.Errorf("%d authentication failures counted, want 1", got)
	}
	if st.AuthFailing(nil) {
		t.Error("no leg, yet failing")
	}
	st.Set(Outcome{Policy: mediaplan.SRTPRequired, Suite: "AES_CM_128_HMAC_SHA1_80", Keyed: true})
	if st.Outcome().Suite != "AES_CM_128_HMAC_SHA1_80" || !st.Outcome().Keyed {
		t.Errorf("outcome %+v", st.Outcome())
	}
}
