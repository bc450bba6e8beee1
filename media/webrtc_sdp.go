package media

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	psdp "github.com/pion/sdp/v3"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Payload types of the relay's own WebRTC offers (calls into browsers).
var offerPT = map[string]uint8{"opus": 111, "pcmu": 0, "pcma": 8, "g722": 9}

const (
	offerDTMF48kPT = 110
	offerDTMF8kPT  = 101
)

// webrtcCodec is a codec the WebRTC leg can carry, as our SDP writes it.
func webrtcCodec(name string, pt uint8) (sdp.Codec, error) {
	switch strings.ToLower(name) {
	case "opus":
		return sdp.Codec{Name: "opus", PT: pt, Clock: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"}, nil
	case "pcmu":
		return sdp.Codec{Name: "PCMU", PT: pt, Clock: 8000, Channels: 1}, nil
	case "pcma":
		return sdp.Codec{Name: "PCMA", PT: pt, Clock: 8000, Channels: 1}, nil
	case "g722":
		return sdp.Codec{Name: "G722", PT: pt, Clock: 8000, Channels: 1}, nil
	}
	return sdp.Codec{}, fmt.Errorf("codec %q not supported on the webrtc leg", name)
}

// iceChars are the ice-char set of RFC 8839 §5.4.
const iceChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// iceToken returns n random ice-chars, for ufrags and passwords.
func iceToken(n int) (string, error) {
	b := make([]byte, n)
	max := big.NewInt(int64(len(iceChars)))
	for i := range b {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b[i] = iceChars[k.Int64()]
	}
	return string(b), nil
}

// remoteParams are the browser's ICE and DTLS attributes.
type remoteParams struct {
	ufrag, pwd string
	fpHash, fp string
	setup      string
	mid        string
}

// browserParams reads them from the first audio section of a browser's
// SDP, media level first, then session level.
func browserParams(s *psdp.SessionDescription) (remoteParams, error) {
	var md *psdp.MediaDescription
	for _, m := range s.MediaDescriptions {
		if m.MediaName.Media == "audio" {
			md = m
			break
		}
	}
	if md == nil {
		return remoteParams{}, sdp.ErrNoAudio
	}
	get := func(key string) string {
		if v, ok := md.Attribute(key); ok {
			return v
		}
		v, _ := s.Attribute(key)
		return v
	}
	p := remoteParams{ufrag: get("ice-ufrag"), pwd: get("ice-pwd"), mid: get("mid")}
	if p.ufrag == "" || p.pwd == "" {
		return p, errors.New("no ICE credentials (a=ice-ufrag, a=ice-pwd)")
	}
	var err error
	if p.fpHash, p.fp, err = sdp.ParseFingerprint(get("fingerprint")); err != nil {
		return p, err
	}
	p.setup = sdp.SetupActPass
	if v := get("setup"); v != "" {
		if p.setup, err = sdp.ParseSetup(v); err != nil {
			return p, err
		}
	}
	return p, nil
}

// setRemote applies the browser's parameters; answering is true when our
// SDP answers its offer. We take the DTLS server role whenever we may, so
// that a browser's ClientHello, which it sends as soon as a check
// succeeds, finds us ready.
func (l *WebRTCLeg) setRemote(p remoteParams) error {
	switch p.setup {
	case sdp.SetupActPass, sdp.SetupActive:
		l.dtlsClient = false
	case sdp.SetupPassive:
		l.dtlsClient = true
	default:
		return fmt.Errorf("a=setup:%s", p.setup)
	}
	l.fpHash, l.fp = p.fpHash, p.fp
	u := p.ufrag
	l.remoteUfrag.Store(&u)
	return nil
}

// Answer creates a leg that answers the browser's offer with codec (opus,
// PCMU, PCMA or G722) and telephone-event, and returns the answer SDP with
// its ICE candidate. Nothing is sent before the browser starts ICE.
func (w *WebRTC) Answer(offer string, codec string) (*WebRTCLeg, string, error) {
	s, offered, err := sdp.Parse([]byte(offer))
	if err != nil {
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	c, ok := offered.Find(codec)
	if !ok {
		return nil, "", fmt.Errorf("browser offer has no %s", codec)
	}
	chosen, err := webrtcCodec(codec, c.PT)
	if err != nil {
		return nil, "", err
	}
	if offered.Port == 0 {
		return nil, "", fmt.Errorf("browser offer: audio rejected (port 0)")
	}
	rp, err := browserParams(s)
	if err != nil {
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	codecs := []sdp.Codec{chosen}
	// Answer telephone-event only at the audio codec's clock when the
	// browser offers it there: given both, Chrome may pick the other one,
	// which neither the forwarder nor the bridge can re-time.
	evClock := uint32(0)
	if _, ok := offered.DTMF(chosen.Clock); ok {
		evClock = chosen.Clock
	}
	for _, ev := range offered.Codecs {
		if ev.Is("telephone-event") && (evClock == 0 || ev.Clock == evClock) {
			codecs = append(codecs, ev)
		}
	}
	l, err := w.newLeg(chosen.Clock)
	if err != nil {
		return nil, "", err
	}
	if err := l.setRemote(rp); err != nil {
		_ = l.Close()
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	setup := sdp.SetupPassive
	if l.dtlsClient {
		setup = sdp.SetupActive
	}
	l.local = w.session(l, s, rp.mid, codecs, setup, sdp.AnswerDirection(offered.Direction))
	if _, l.Audio, err = sdp.Parse([]byte(l.local)); err != nil {
		_ = l.Close()
		return nil, "", fmt.Errorf("own answer: %w", err)
	}
	l.start()
	return l, l.local, nil
}

// Offer creates a leg that offers the browser codecs (opus, PCMU, PCMA,
// G722, in preference order) and telephone-event, and returns the offer
// SDP with its ICE candidate. The leg is usable once SetAnswer has applied
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
	var list []sdp.Codec
	audio := 0
	for _, c := range codecs {
		if c.Is("telephone-event") {
			list = append(list, sdp.Codec{Name: "telephone-event", PT: c.PT, Clock: c.Clock, Channels: 1, Fmtp: "0-16"})
			continue
		}
		wc, err := webrtcCodec(c.Name, c.PT)
		if err != nil {
			return nil, "", err
		}
		audio++
		list = append(list, wc)
	}
	if audio == 0 {
		return nil, "", errors.New("no codec to offer")
	}
	l, err := w.newLeg(list[0].Clock)
	if err != nil {
		return nil, "", err
	}
	l.local = w.session(l, nil, "0", list, sdp.SetupActPass, "sendrecv")
	return l, l.local, nil
}

// SetAnswer applies the browser's answer to a leg made by Offer. The codec
// the browser listed first becomes the leg's codec; Audio then holds the
// answered stream.
func (l *WebRTCLeg) SetAnswer(answer string) error {
	s, a, err := sdp.Parse([]byte(answer))
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
	wc, err := webrtcCodec(chosen.Name, chosen.PT)
	if err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	rp, err := browserParams(s)
	if err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	if rp.setup == sdp.SetupActPass {
		return errors.New("browser answer: a=setup:actpass is not an answer")
	}
	if err := l.setRemote(rp); err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	l.rtcpState.clock = wc.Clock
	l.rx.clockRate = uint64(wc.Clock)
	l.Audio = a
	l.start()
	return nil
}

// LocalSDP is the leg's local description (offer or answer).
func (l *WebRTCLeg) LocalSDP() string { return l.local }

// session writes our SDP: ICE-lite, one audio section bundled and
// rtcp-muxed on the shared port, and, when answering, every other section
// of the offer rejected.
func (w *WebRTC) session(l *WebRTCLeg, offer *psdp.SessionDescription, mid string, codecs []sdp.Codec, setup, dir string) string {
	var b strings.Builder
	addr := w.cands[0]
	ipv := "IP4"
	if addr.Is6() {
		ipv = "IP6"
	}
	fmt.Fprintf(&b, "v=0\r\no=mediarelay %d 1 IN %s %s\r\ns=-\r\nt=0 0\r\n", time.Now().UnixNano()&0x7fffffffffff, ipv, addr)
	if mid != "" {
		fmt.Fprintf(&b, "a=group:BUNDLE %s\r\n", mid)
	}
	b.WriteString("a=ice-lite\r\na=msid-semantic: WMS mediarelay\r\n")
	audio := func() {
		fmt.Fprintf(&b, "m=audio %d UDP/TLS/RTP/SAVPF", w.local.Port())
		for _, c := range codecs {
			fmt.Fprintf(&b, " %d", c.PT)
		}
		fmt.Fprintf(&b, "\r\nc=IN %s %s\r\n", ipv, addr)
		fp := w.fp
		if l.e2e {
			fp = l.far.Fingerprint // end to end: the far end's certificate
		}
		fmt.Fprintf(&b, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=fingerprint:%s\r\na=setup:%s\r\n", l.ufrag, l.pwd, fp, setup)
		if mid != "" {
			fmt.Fprintf(&b, "a=mid:%s\r\n", mid)
		}
		fmt.Fprintf(&b, "a=%s\r\na=rtcp-mux\r\n", dir)
		sdp.WriteRTPMaps(&b, codecs)
		if l.e2e {
			// The far end's SSRC reaches the browser unchanged: announce
			// its own, if it did, never ours.
			for _, v := range l.far.SSRC {
				fmt.Fprintf(&b, "a=ssrc:%s\r\n", v)
			}
			b.WriteString("a=msid:mediarelay audio\r\n")
		} else {
			fmt.Fprintf(&b, "a=ssrc:%d cname:mediarelay\r\na=ssrc:%d msid:mediarelay audio\r\na=msid:mediarelay audio\r\n", l.ssrc, l.ssrc)
		}
		for i, a := range w.cands {
			// RFC 8445 §5.1.2.1 host priority, lower for each further address.
			prio := uint32(126)<<24 | uint32(65535-i)<<8 | 255
			fmt.Fprintf(&b, "a=candidate:%d 1 udp %d %s %d typ host\r\n", i+1, prio, a, w.local.Port())
		}
		if w.tcp != nil {
			for i, a := range w.cands {
				// Below every UDP candidate, so UDP wins where it works.
				prio := uint32(90)<<24 | uint32(65535-i)<<8 | 255
				fmt.Fprintf(&b, "a=candidate:%d 1 tcp %d %s %d typ host tcptype passive\r\n", len(w.cands)+i+1, prio, a, w.tcp.port)
			}
		}
		b.WriteString("a=end-of-candidates\r\n")
	}
	if offer == nil {
		audio()
		return b.String()
	}
	done := false
	for _, md := range offer.MediaDescriptions {
		if md.MediaName.Media == "audio" && !done {
			done = true
			audio()
			continue
		}
		// Rejected (RFC 3264 §6): port 0, the offered formats, its mid.
		fmt.Fprintf(&b, "m=%s 0 %s %s\r\nc=IN %s %s\r\n", md.MediaName.Media, strings.Join(md.MediaName.Protos, "/"),
			strings.Join(md.MediaName.Formats, " "), ipv, addr)
		if m, ok := md.Attribute("mid"); ok {
			fmt.Fprintf(&b, "a=mid:%s\r\n", m)
		}
		b.WriteString("a=inactive\r\n")
	}
	return b.String()
}
