package media

import (
	"errors"
	"fmt"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// E2EPeer is what an end-to-end leg announces of the far end in its SDP.
type E2EPeer struct {
	// Fingerprint ("sha-256 AB:...") and Setup are the far end's a=fingerprint
	// and a=setup, passed on unchanged.
	Fingerprint, Setup string
	// SSRC are the far end's a=ssrc values ("1234 cname:x"): its SSRC
	// reaches the browser unchanged, and a browser that offered may not
	// take an SSRC its answer did not declare.
	SSRC []string
}

// AnswerE2E answers a browser's offer for an end-to-end call. codecs are
// what the far end answered, with the browser's own payload types (the
// relay offered them unchanged), and far is the far end's DTLS identity:
// the browser's DTLS handshake is with the far end, through the leg, which
// runs none itself.
func (w *WebRTC) AnswerE2E(offer string, codecs []sdp.Codec, far E2EPeer) (*WebRTCLeg, string, error) {
	s, offered, err := sdp.Parse([]byte(offer))
	if err != nil {
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	if offered.Port == 0 {
		return nil, "", errors.New("browser offer: audio rejected (port 0)")
	}
	rp, err := browserParams(s)
	if err != nil {
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	if far.Setup != sdp.SetupActive && far.Setup != sdp.SetupPassive {
		return nil, "", fmt.Errorf("e2e answer: a=setup:%s", far.Setup)
	}
	clock, err := e2eClock(codecs)
	if err != nil {
		return nil, "", err
	}
	l, err := w.newLegMode(clock, far)
	if err != nil {
		return nil, "", err
	}
	if err := l.setRemote(rp); err != nil {
		_ = l.Close()
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	l.local = w.session(l, s, rp.mid, codecs, far.Setup, sdp.AnswerDirection(offered.Direction))
	if _, l.Audio, err = sdp.Parse([]byte(l.local)); err != nil {
		_ = l.Close()
		return nil, "", fmt.Errorf("own answer: %w", err)
	}
	l.start()
	return l, l.local, nil
}

// OfferE2E offers a browser an end-to-end call: codecs with the far end's
// payload types, and the far end's identity (its setup normally actpass).
// The browser's answer goes to SetAnswer; its fingerprint and setup are
// for the far end.
func (w *WebRTC) OfferE2E(codecs []sdp.Codec, far E2EPeer) (*WebRTCLeg, string, error) {
	clock, err := e2eClock(codecs)
	if err != nil {
		return nil, "", err
	}
	l, err := w.newLegMode(clock, far)
	if err != nil {
		return nil, "", err
	}
	l.local = w.session(l, nil, "0", codecs, far.Setup, "sendrecv")
	return l, l.local, nil
}

// e2eClock is the clock of the first audio codec, which must be one a
// browser takes: the relay cannot transcode what it cannot read.
func e2eClock(codecs []sdp.Codec) (uint32, error) {
	for _, c := range codecs {
		if c.Is("telephone-event") {
			continue
		}
		wc, err := webrtcCodec(c.Name, c.PT)
		if err != nil {
			return 0, err
		}
		return wc.Clock, nil
	}
	return 0, errors.New("e2e: no audio codec")
}

// RemoteDTLS returns the fingerprint ("sha-256 AB:...") and a=setup of an
// SDP's first audio stream, media level first, then session level: what
// an end-to-end call passes to the other side unchanged.
func RemoteDTLS(body string) (fingerprint, setup string, err error) {
	s, _, err := sdp.Parse([]byte(body))
	if err != nil {
		return "", "", err
	}
	for _, m := range s.MediaDescriptions {
		if m.MediaName.Media != "audio" {
			continue
		}
		get := func(key string) string {
			if v, ok := m.Attribute(key); ok {
				return v
			}
			v, _ := s.Attribute(key)
			return v
		}
		h, fp, err := sdp.ParseFingerprint(get("fingerprint"))
		if err != nil {
			return "", "", err
		}
		setup = sdp.SetupActPass
		if v := get("setup"); v != "" {
			if setup, err = sdp.ParseSetup(v); err != nil {
				return "", "", err
			}
		}
		return h + " " + fp, setup, nil
	}
	return "", "", sdp.ErrNoAudio
}
