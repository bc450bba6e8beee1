package media

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Payload types of the relay's own WebRTC offers (calls into browsers).
var offerPT = map[string]uint8{"opus": 111, "pcmu": 0, "pcma": 8, "g722": 9}

const (
	offerDTMF48kPT = 110
	offerDTMF8kPT  = 101
)

// Offer creates a leg that offers the browser codecs (opus, PCMU, PCMA,
// G722, in preference order) and telephone-event, and returns the offer
// SDP with its ICE candidates. The leg is usable once SetAnswer has applied
// the browser's answer.
func (w *WebRTC) Offer(codecs []string) (*WebRTCLeg, string, error) {
	var list []sdp.Codec
	for _, name := range codecs {
		list = append(list, sdp.Codec{Name: name, PT: offerPT[strings.ToLower(name)]})
	}
	list = append(list,
		sdp.Codec{Name: "telephone-event", PT: offerDTMF48kPT, Clock: 48000},
		sdp.Codec{Name: "telephone-event", PT: offerDTMF8kPT, Clock: 8000})
	return w.OfferCodecs(list)
}

// OfferCodecs is Offer with the payload types given: audio codecs by name
// in preference order, and telephone-event entries (PT and clock). A
// transfer uses it to offer a new browser the numbering the call's
// forwarding already uses.
func (w *WebRTC) OfferCodecs(codecs []sdp.Codec) (*WebRTCLeg, string, error) {
	var m webrtc.MediaEngine
	var first webrtc.RTPCodecCapability
	audio := 0
	for _, c := range codecs {
		if c.Is("telephone-event") {
			capEv := webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: c.Clock, Channels: 1, SDPFmtpLine: "0-16"}
			if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: capEv, PayloadType: webrtc.PayloadType(c.PT)},
				webrtc.RTPCodecTypeAudio); err != nil {
				return nil, "", fmt.Errorf("register telephone-event: %w", err)
			}
			continue
		}
		capab, err := codecCapability(c.Name)
		if err != nil {
			return nil, "", err
		}
		if audio == 0 {
			first = capab
		}
		audio++
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: capab, PayloadType: webrtc.PayloadType(c.PT)},
			webrtc.RTPCodecTypeAudio); err != nil {
			return nil, "", fmt.Errorf("register %s: %w", c.Name, err)
		}
	}
	if audio == 0 {
		return nil, "", errors.New("no codec to offer")
	}
	// No interceptors, as in Answer: they allocate per packet.
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&m), webrtc.WithSettingEngine(w.settings),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", fmt.Errorf("peer connection: %w", err)
	}
	l := w.newLeg(pc, first)
	fail := func(err error) (*WebRTCLeg, string, error) {
		_ = pc.Close()
		return nil, "", err
	}
	sender, err := pc.AddTrack(l.track)
	if err != nil {
		return fail(fmt.Errorf("add track: %w", err))
	}
	go drainRTCP(sender)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(fmt.Errorf("create offer: %w", err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(fmt.Errorf("set offer: %w", err))
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		return fail(errors.New("ice gathering did not complete"))
	}
	l.connectTimeout = w.opts.ConnectTimeout
	return l, pc.LocalDescription().SDP, nil
}

// SetAnswer applies the browser's answer to a leg made by Offer. The codec
// the browser listed first becomes the leg's codec; Audio then holds the
// answered stream.
func (l *WebRTCLeg) SetAnswer(answer string) error {
	_, a, err := sdp.Parse([]byte(answer))
	if err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	var chosen *sdp.Codec
	for i := range a.Codecs {
		if !a.Codecs[i].Is("telephone-event") {
			chosen = &a.Codecs[i]
			break
		}
	}
	if chosen == nil || a.Port == 0 {
		return errors.New("browser answer: no audio codec accepted")
	}
	capab, err := codecCapability(chosen.Name)
	if err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	// Bind runs when the answer is applied: set the codec first.
	l.track.capab = capab
	l.rx.clockRate = uint64(capab.ClockRate)
	l.Audio = a
	if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	go l.watchConnect(l.connectTimeout)
	return nil
}

// LocalSDP is the leg's current local description (offer or answer).
func (l *WebRTCLeg) LocalSDP() string {
	if d := l.pc.LocalDescription(); d != nil {
		return d.SDP
	}
	return ""
}

// newLeg builds a leg around pc, sending with capab, wired for tracks and
// connection state as Answer does.
func (w *WebRTC) newLeg(pc *webrtc.PeerConnection, capab webrtc.RTPCodecCapability) *WebRTCLeg {
	l := &WebRTCLeg{
		pc:        pc,
		track:     &localTrack{capab: capab},
		log:       w.log,
		remote:    make(chan *webrtc.TrackRemote, 1),
		connected: make(chan struct{}),
		failed:    make(chan struct{}),
		closed:    make(chan struct{}),
		rx:        recvStats{clockRate: uint64(capab.ClockRate), epoch: time.Now()},
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if t.Kind() != webrtc.RTPCodecTypeAudio {
			return
		}
		select {
		case l.remote <- t:
		default:
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			select {
			case <-l.connected:
			default:
				close(l.connected)
			}
		case webrtc.PeerConnectionStateFailed:
			l.failOnce.Do(func() { close(l.failed) })
		}
	})
	return l
}

// drainRTCP reads and drops RTCP for a sender; the reports are not used.
func drainRTCP(sender *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := sender.Read(buf); err != nil {
			return
		}
	}
}
