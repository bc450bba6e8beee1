package mediaplan

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// End-to-end calls (media_mode: e2e): the relay anchors ICE and latching
// but the DTLS handshake and the SRTP keys stay with the two endpoints.
// Each side's a=fingerprint and a=setup reach the other unchanged, codecs
// keep the payload types of the offer (the relay cannot rewrite an
// authenticated RTP header), and DTLS records and SRTP cross the legs as
// they are (media.NewOpaqueStage).

// ModeE2E is the media mode of a call whose DTLS-SRTP is end to end.
const ModeE2E = "e2e"

// E2E fallback policies of a trunk (config e2e_fallback).
const (
	E2EFallbackRefuse    = "refuse"
	E2EFallbackTerminate = "terminate"
)

// ErrE2ENoDTLS is a far end that answered an end-to-end offer without
// DTLS-SRTP (plain RTP or SDES) on a trunk that does not allow falling back.
var ErrE2ENoDTLS = errors.New("end-to-end media needs DTLS-SRTP at the far end")

// E2EOffer lists what an end-to-end call offers the far end: the
// browser's codecs that the trunk allows, in the trunk's order, with the
// browser's payload types and format parameters, and the browser's
// telephone-event at those codecs' clocks.
func E2EOffer(trunkCodecs []string, browser sdp.Audio) ([]sdp.Codec, error) {
	var out []sdp.Codec
	clocks := map[uint32]bool{}
	for _, name := range trunkCodecs {
		if !browserCan(browser, name) {
			continue
		}
		c, _ := browser.Find(name)
		out = append(out, c)
		clocks[c.Clock] = true
	}
	if len(out) == 0 {
		return nil, ErrNoCommonCodec
	}
	for _, c := range browser.Codecs {
		if c.Is("telephone-event") && clocks[c.Clock] {
			out = append(out, c)
		}
	}
	return out, nil
}

// DTLSIdentity is one side's DTLS parameters from its SDP: what an
// end-to-end call passes on.
type DTLSIdentity struct {
	Fingerprint string // "sha-256 AB:CD:..."
	Setup       string
	SSRC        []string // a=ssrc values: the stream reaches the other side with its SSRC
	ICEUfrag    string   // a=ice-ufrag of a far end that speaks ICE
}

// E2EOfferSDP turns the relay's offer to the far end into an end-to-end
// one: DTLS-SRTP with the browser's fingerprint and setup, rtcp-mux (the
// browser's SRTCP shares its RTP flow), and ICE-lite lines for a far end
// that speaks ICE (media.RTPLeg.EnableICE; others ignore them).
func E2EOfferSDP(o *sdp.Offer, browser DTLSIdentity, ice []string) {
	o.Proto = "UDP/TLS/RTP/SAVP"
	o.Extra = append(o.Extra, "fingerprint:"+browser.Fingerprint, "setup:"+browser.Setup, "rtcp-mux")
	o.Extra = append(o.Extra, ice...)
}

// FarDTLS reads the far end's DTLS parameters from its SDP; ok is false
// when it cannot do DTLS-SRTP (no TLS protocol or no fingerprint).
func FarDTLS(ans sdp.Audio) (id DTLSIdentity, ok bool, err error) {
	if !strings.Contains(strings.ToUpper(ans.Proto), "TLS") {
		return id, false, nil
	}
	for _, a := range ans.Attrs {
		switch a.Key {
		case "fingerprint":
			if h, v, err := sdp.ParseFingerprint(a.Value); err == nil && id.Fingerprint == "" {
				id.Fingerprint = h + " " + v
			}
		case "setup":
			if id.Setup, err = sdp.ParseSetup(a.Value); err != nil {
				return id, false, err
			}
		case "ice-ufrag":
			id.ICEUfrag = a.Value
		case "ssrc":
			if validSSRCAttr(a.Value) {
				id.SSRC = append(id.SSRC, a.Value)
			}
		}
	}
	if id.Fingerprint == "" {
		return id, false, nil
	}
	return id, true, nil
}

// E2EPlan settles an end-to-end call from the answer: its first codec
// that was offered, with the offered payload type, and the codecs of the
// answer that can cross unchanged.
func E2EPlan(answer sdp.Audio, offered []sdp.Codec) (Plan, []sdp.Codec, error) {
	var p Plan
	var codecs []sdp.Codec
	for _, c := range answer.Codecs {
		var match *sdp.Codec
		for i := range offered {
			if offered[i].Is(c.Name) && offered[i].PT == c.PT && offered[i].Clock == c.Clock {
				match = &offered[i]
				break
			}
		}
		if match == nil {
			continue // a renumbered or unoffered codec cannot cross unchanged
		}
		codecs = append(codecs, c)
		switch {
		case c.Is("telephone-event"):
			if p.SIPDTMF.PT == 0 {
				p.SIPDTMF = c
			}
		case p.BrowserCodec == "":
			p.SIPCodec, p.BrowserCodec = c, c.Name
		}
	}
	if p.BrowserCodec == "" {
		return p, nil, fmt.Errorf("far end answered no offered codec with its payload type: %w", ErrNoCommonCodec)
	}
	p.Mode = ModeE2E
	return p, codecs, nil
}

// validSSRCAttr accepts an a=ssrc value worth passing to a browser: a
// number, then an attribute of printable text (no line breaks to smuggle
// other SDP lines in).
func validSSRCAttr(v string) bool {
	id, rest, _ := strings.Cut(v, " ")
	if _, err := strconv.ParseUint(id, 10, 32); err != nil || len(v) > 256 {
		return false
	}
	return !strings.ContainsAny(rest, "\r\n\x00")
}

// E2EBrowserCodecs lists what an end-to-end call offers the browser: the
// trunk's offered codecs that its configuration allows and a browser
// takes, with the trunk's payload types, and its telephone-event at those
// clocks.
func E2EBrowserCodecs(allowed []string, offer sdp.Audio) []sdp.Codec {
	var out []sdp.Codec
	clocks := map[uint32]bool{}
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") || !HasCodec(allowed, c.Name) || !WebRTCCodec(c.Name) {
			continue
		}
		out = append(out, c)
		clocks[c.Clock] = true
	}
	if len(out) == 0 {
		return nil
	}
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") && clocks[c.Clock] {
			out = append(out, c)
		}
	}
	return out
}

// E2EFollow checks a trunk's mid-call offer on an end-to-end call: a hold,
// a refresh or a move keeps the opaque forwarding as it is, but another
// codec or payload type could not reach the browser unchanged (the relay
// cannot rewrite authenticated headers, nor re-offer the browser in its
// place), so it gets 488 and the call goes on.
func E2EFollow(cur Plan, offer sdp.Audio) error {
	for _, c := range offer.Codecs {
		if c.Is(cur.SIPCodec.Name) && c.PT == cur.SIPCodec.PT && c.Clock == cur.SIPCodec.Clock {
			return nil
		}
	}
	return fmt.Errorf("an end-to-end call keeps codec %s/%d: %w", cur.SIPCodec.Name, cur.SIPCodec.PT, ErrNoCommonCodec)
}

// E2ESettledSetup is the browser's a=setup on an end-to-end call to a
// trunk once the trunk's answer (its SDP, answer) took its role: the
// other one; "" if the answer says nothing readable.
func E2ESettledSetup(answer string) string {
	_, setup, err := media.RemoteDTLS(answer)
	switch {
	case err != nil:
		return ""
	case setup == sdp.SetupPassive:
		return sdp.SetupActive
	}
	return sdp.SetupPassive // active, or absent (RFC 4145: active)
}
