// Package mediaplan decides what a call's media will be, from the SDPs of
// its two legs, without touching a socket: which codecs the relay offers
// each side (TrunkOffer, BrowserCodecs, E2EOffer, E2EBrowserCodecs), the
// Plan an answer settles (Decide, DecideInbound, E2EPlan) and how it
// follows a mid-call offer (Replan, E2EFollow), how two legs' codecs are
// joined (JoinFor, Joinable), and the SIP leg's encryption under a
// trunk's SRTP policy: SDES keys offered and answered (SDESOffer,
// PickSDES, InboundSecurity) and the far end's DTLS identity on an
// end-to-end call (FarDTLS). signaling's Call and join carry these
// decisions out.
package mediaplan

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Media modes of a trunk (config.Trunk.MediaMode) and of a Plan.
const (
	ModeAuto        = "auto"        // passthrough when a codec is shared, else transcode
	ModePassthrough = "passthrough" // the same codec on both legs
	ModeTranscode   = "transcode"   // decoded and re-encoded (or G.711 law converted)
)

// SIPCodecs are the codecs, with the payload types, the relay uses on SIP
// legs it offers, by lower-case name; read only.
var SIPCodecs = map[string]sdp.Codec{
	"pcmu": {Name: "PCMU", PT: 0, Clock: 8000, Channels: 1},
	"pcma": {Name: "PCMA", PT: 8, Clock: 8000, Channels: 1},
	"g722": {Name: "G722", PT: 9, Clock: 8000, Channels: 1},
	"opus": {Name: "opus", PT: 111, Clock: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"},
}

// The telephone-events the relay offers on SIP legs: at 8 kHz always, at
// 48 kHz too when it offers Opus.
var (
	DTMF8k  = sdp.Codec{Name: "telephone-event", PT: 101, Clock: 8000, Channels: 1, Fmtp: "0-16"}
	DTMF48k = sdp.Codec{Name: "telephone-event", PT: 110, Clock: 48000, Channels: 1, Fmtp: "0-16"}
)

// Transcodable says which SIP-leg codecs the transcode bridge can produce
// from Opus on the WebRTC leg.
func Transcodable(name string) bool {
	switch strings.ToLower(name) {
	case "pcmu", "pcma", "g722":
		return true
	}
	return false
}

// browserCan says whether the WebRTC leg can carry codec name unchanged.
func browserCan(b sdp.Audio, name string) bool {
	if !WebRTCCodec(name) {
		return false
	}
	_, ok := b.Find(name)
	return ok
}

// WebRTCCodec says whether the relay carries codec name to browsers.
func WebRTCCodec(name string) bool {
	switch strings.ToLower(name) {
	case "opus", "pcmu", "pcma", "g722":
		return true
	}
	return false
}

// HasCodec says whether names (a trunk's configured codecs, say) lists
// codec name, in any case.
func HasCodec(names []string, name string) bool {
	for _, x := range names {
		if strings.EqualFold(x, name) {
			return true
		}
	}
	return false
}

// ErrNoCommonCodec is wrapped by every failure to find a codec both legs
// can be joined on.
var ErrNoCommonCodec = errors.New("no codec in common")

// TrunkOffer lists what the relay offers the trunk for a browser offer:
// the trunk's codecs in its order, keeping those the mode can carry.
func TrunkOffer(mode string, trunkCodecs []string, browser sdp.Audio) ([]sdp.Codec, error) {
	_, browserOpus := browser.Find("opus")
	var out []sdp.Codec
	hasOpus := false
	for _, name := range trunkCodecs {
		c, ok := SIPCodecs[strings.ToLower(name)]
		if !ok {
			continue
		}
		shared := browserCan(browser, c.Name)
		canTranscode := browserOpus && Transcodable(c.Name)
		keep := false
		switch mode {
		case ModePassthrough:
			keep = shared
		case ModeTranscode:
			keep = canTranscode
		default:
			keep = shared || canTranscode
		}
		if keep {
			out = append(out, c)
			hasOpus = hasOpus || c.Is("opus")
		}
	}
	if len(out) == 0 {
		return nil, ErrNoCommonCodec
	}
	out = append(out, DTMF8k)
	if hasOpus {
		out = append(out, DTMF48k)
	}
	return out, nil
}

// Plan is a call's media as an answer settles it.
type Plan struct {
	Mode         string    // passthrough, transcode or e2e
	SIPCodec     sdp.Codec // as the trunk answered it (its payload type)
	SIPDTMF      sdp.Codec // telephone-event on the SIP leg; PT 0 if none
	BrowserCodec string    // codec name for the WebRTC leg
}

// Decide picks the call's media from the trunk's answer to a browser's
// call (offered is TrunkOffer's list).
func Decide(mode string, browser, answer sdp.Audio, offered []sdp.Codec) (Plan, error) {
	var p Plan
	found := false
	for _, c := range answer.Codecs {
		if c.Is("telephone-event") {
			continue
		}
		for _, o := range offered {
			if o.Is(c.Name) {
				p.SIPCodec, found = c, true
				break
			}
		}
		if found {
			break
		}
	}
	if !found {
		return p, fmt.Errorf("trunk answered no codec that was offered: %w", ErrNoCommonCodec)
	}
	if ev, ok := answer.DTMF(8000); ok && p.SIPCodec.Clock == 8000 {
		p.SIPDTMF = ev
	} else if ev, ok := answer.DTMF(p.SIPCodec.Clock); ok {
		p.SIPDTMF = ev
	} else if ev, ok := answer.DTMF(8000); ok {
		p.SIPDTMF = ev
	}
	_, browserOpus := browser.Find("opus")
	switch {
	case mode != ModeTranscode && browserCan(browser, p.SIPCodec.Name):
		p.Mode, p.BrowserCodec = ModePassthrough, p.SIPCodec.Name
	case mode != ModePassthrough && browserOpus && Transcodable(p.SIPCodec.Name):
		p.Mode, p.BrowserCodec = ModeTranscode, "opus"
	default:
		return p, fmt.Errorf("trunk codec %s cannot reach the browser in mode %s: %w", p.SIPCodec.Name, mode, ErrNoCommonCodec)
	}
	return p, nil
}

// BrowserCodecs lists what the relay offers the browser for a trunk's
// offer: codecs it can pass through in the trunk's order, then Opus when
// it can transcode; allowed is the trunk's configured codecs.
func BrowserCodecs(mode string, allowed []string, offer sdp.Audio) []string {
	var out []string
	canTranscode := false
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") || !HasCodec(allowed, c.Name) {
			continue
		}
		if Transcodable(c.Name) {
			canTranscode = true
		}
		if WebRTCCodec(c.Name) && mode != ModeTranscode && !HasCodec(out, c.Name) {
			out = append(out, strings.ToLower(c.Name))
		}
	}
	if canTranscode && mode != ModePassthrough && !HasCodec(out, "opus") {
		out = append(out, "opus")
	}
	return out
}

// DecideInbound settles the media of a trunk's call once the browser has
// answered with browserCodec.
func DecideInbound(mode string, allowed []string, offer sdp.Audio, browserCodec string) (Plan, error) {
	p := Plan{BrowserCodec: browserCodec}
	found := false
	if mode != ModeTranscode {
		for _, c := range offer.Codecs {
			if c.Is(browserCodec) && HasCodec(allowed, c.Name) {
				p.Mode, p.SIPCodec, found = ModePassthrough, c, true
				break
			}
		}
	}
	if !found && mode != ModePassthrough && strings.EqualFold(browserCodec, "opus") {
		for _, c := range offer.Codecs {
			if Transcodable(c.Name) && HasCodec(allowed, c.Name) {
				p.Mode, p.SIPCodec, found = ModeTranscode, c, true
				break
			}
		}
	}
	if !found {
		return p, ErrNoCommonCodec
	}
	if ev, ok := offer.DTMF(p.SIPCodec.Clock); ok {
		p.SIPDTMF = ev
	} else if ev, ok := offer.DTMF(8000); ok {
		p.SIPDTMF = ev
	}
	return p, nil
}
