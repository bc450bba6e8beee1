package signaling

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Media modes of a trunk.
const (
	ModeAuto        = "auto"
	ModePassthrough = "passthrough"
	ModeTranscode   = "transcode"
)

// Payload types the relay uses on SIP legs it offers.
var sipCodecs = map[string]sdp.Codec{
	"pcmu": {Name: "PCMU", PT: 0, Clock: 8000, Channels: 1},
	"pcma": {Name: "PCMA", PT: 8, Clock: 8000, Channels: 1},
	"g722": {Name: "G722", PT: 9, Clock: 8000, Channels: 1},
	"opus": {Name: "opus", PT: 111, Clock: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"},
}

var (
	dtmf8k  = sdp.Codec{Name: "telephone-event", PT: 101, Clock: 8000, Channels: 1, Fmtp: "0-16"}
	dtmf48k = sdp.Codec{Name: "telephone-event", PT: 110, Clock: 48000, Channels: 1, Fmtp: "0-16"}
)

// transcodable says which SIP-leg codecs the transcode bridge can produce
// from Opus on the WebRTC leg.
func transcodable(name string) bool {
	switch strings.ToLower(name) {
	case "pcmu", "pcma", "g722":
		return true
	}
	return false
}

// browserCan says whether the WebRTC leg can carry codec name unchanged.
func browserCan(b sdp.Audio, name string) bool {
	if _, err := webrtcCodec(name); err != nil {
		return false
	}
	_, ok := b.Find(name)
	return ok
}

func webrtcCodec(name string) (string, error) {
	switch strings.ToLower(name) {
	case "opus", "pcmu", "pcma", "g722":
		return name, nil
	}
	return "", fmt.Errorf("codec %s not relayed to browsers", name)
}

var errNoCommonCodec = errors.New("no codec in common")

// trunkOffer lists what the relay offers the trunk for a browser offer:
// the trunk's codecs in its order, keeping those the mode can carry.
func trunkOffer(mode string, trunkCodecs []string, browser sdp.Audio) ([]sdp.Codec, error) {
	_, browserOpus := browser.Find("opus")
	var out []sdp.Codec
	hasOpus := false
	for _, name := range trunkCodecs {
		c, ok := sipCodecs[strings.ToLower(name)]
		if !ok {
			continue
		}
		shared := browserCan(browser, c.Name)
		canTranscode := browserOpus && transcodable(c.Name)
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
		return nil, errNoCommonCodec
	}
	out = append(out, dtmf8k)
	if hasOpus {
		out = append(out, dtmf48k)
	}
	return out, nil
}

// mediaPlan is what the trunk's answer settles.
type mediaPlan struct {
	Mode         string    // passthrough or transcode
	SIPCodec     sdp.Codec // as the trunk answered it (its payload type)
	SIPDTMF      sdp.Codec // telephone-event on the SIP leg; PT 0 if none
	BrowserCodec string    // codec name for the WebRTC leg
}

// decide picks the call's media from the trunk's answer.
func decide(mode string, browser, answer sdp.Audio, offered []sdp.Codec) (mediaPlan, error) {
	var p mediaPlan
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
		return p, fmt.Errorf("trunk answered no codec that was offered: %w", errNoCommonCodec)
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
	case mode != ModePassthrough && browserOpus && transcodable(p.SIPCodec.Name):
		p.Mode, p.BrowserCodec = ModeTranscode, "opus"
	default:
		return p, fmt.Errorf("trunk codec %s cannot reach the browser in mode %s: %w", p.SIPCodec.Name, mode, errNoCommonCodec)
	}
	return p, nil
}
