package ngnode

import (
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/ng"
)

// Session is a call set up by ng commands: the relay's call (legs,
// forwarding, statistics, CDR) and what the proxy told about it.
type Session struct {
	mu      sync.Mutex
	call    Call
	callID  string
	fromTag string
	toTag   string
	proxy   netip.AddrPort
	created time.Time
	last    time.Time // last signal
	labels  map[string]string
	// webOffer: the offerer (from-tag) is the WebRTC side; else the
	// offerer speaks plain RTP/SRTP and the answerer is WebRTC.
	webOffer  bool
	offerSDP  string // as received, to recognise a retransmitted offer
	replySDP  string // our offer, returned again for a retransmitted offer
	answerSDP string
}

// CallID is the proxy's Call-ID of the session.
func (s *Session) CallID() string { return s.callID }

// FromTag is the offerer's tag.
func (s *Session) FromTag() string { return s.fromTag }

// Proxy is where the session's offer came from.
func (s *Session) Proxy() netip.AddrPort { return s.proxy }

// Created is when the offer came.
func (s *Session) Created() time.Time { return s.created }

// WebOffer says the offerer is the WebRTC side (else it speaks plain
// RTP or SDES-SRTP and the answerer is WebRTC).
func (s *Session) WebOffer() bool { return s.webOffer }

// Call is the relay's call behind the session.
func (s *Session) Call() Call { return s.call }

// isWebRTC says whether an SDP's audio is a browser's: DTLS over UDP (or TCP).
func isWebRTC(a sdp.Audio) bool {
	return strings.Contains(strings.ToUpper(a.Proto), "TLS")
}

// sourceAddress applies SIP-source-address: the peer's media address is
// the one the proxy received the SIP message from, not the SDP's.
func sourceAddress(a sdp.Audio, f ng.Flags) sdp.Audio {
	if f.SIPSourceAddress && !f.TrustAddress && f.ReceivedFrom.IsValid() && a.Port != 0 {
		a.Addr = f.ReceivedFrom
	}
	return a
}

// Route is the stand-in trunk of an ng call: the media policy the flags
// f ask for, given the offer's codecs and the plain side's protocol,
// named after the proxy so that the CDR says where the call came from.
func Route(proxy netip.AddrPort, f ng.Flags, offerCodecs []sdp.Codec, plainSide string) *config.Trunk {
	t := &config.Trunk{
		Name:                           "ng:" + proxy.String(),
		Transport:                      "udp",
		MediaMode:                      mediaplan.ModePassthrough,
		AllowSDESOverInsecureTransport: true, // the proxy decided; SDES over its signalling is its call
	}
	// Codecs: what the offer has that the relay can carry, less strip and
	// mask; transcode-X adds X (and allows transcoding). A masked X that is
	// also transcode-X is rtpengine's way to force transcoding: the
	// offerer's own X is hidden, so X reaches it only through the
	// transcoder.
	for _, c := range offerCodecs {
		if c.Is("telephone-event") || ng.Has(f.Codec.Strip, c.Name) || ng.Has(f.Codec.Mask, c.Name) {
			continue
		}
		if _, ok := mediaplan.SIPCodecs[strings.ToLower(c.Name)]; ok && !mediaplan.HasCodec(t.Codecs, c.Name) {
			t.Codecs = append(t.Codecs, mediaplan.SIPCodecs[strings.ToLower(c.Name)].Name)
		}
	}
	for _, name := range f.Codec.Transcode {
		if c, ok := mediaplan.SIPCodecs[strings.ToLower(name)]; ok && !ng.Has(f.Codec.Strip, name) {
			if t.MediaMode != mediaplan.ModeTranscode {
				t.MediaMode = mediaplan.ModeAuto
			}
			if ng.Has(f.Codec.Mask, name) {
				t.MediaMode = mediaplan.ModeTranscode
			}
			if !mediaplan.HasCodec(t.Codecs, c.Name) {
				t.Codecs = append(t.Codecs, c.Name)
			}
		}
	}
	// The plain side's encryption: SDES for a SAVP protocol unless SDES=off.
	if strings.Contains(plainSide, "SAVP") && !ng.Has(f.SDES, "off") {
		t.SRTP = mediaplan.SRTPRequired
	} else {
		t.SRTP = mediaplan.SRTPOff
	}
	return t
}

// stats is the call in rtpengine's query/delete shape: per tag (party) its
// media stream with what was received from it, and totals.
func (s *Session) stats() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.call.Stats()
	ws, rs := cs.Web, cs.Plain
	webProto, plainProto := "UDP/TLS/RTP/SAVPF", "RTP/AVP"
	if cs.SRTP {
		plainProto = "RTP/SAVP"
	}
	party := func(tag, proto string, port int, st media.LegStats, other string) map[string]any {
		stream := map[string]any{
			"local port": port,
			"stats":      map[string]any{"packets": st.PacketsIn, "bytes": st.BytesIn, "errors": st.Dropped},
			"stats_out":  map[string]any{"packets": st.PacketsOut, "bytes": st.BytesOut, "errors": 0},
			"lost":       st.Lost,
			"jitter_ms":  int64(st.Jitter),
		}
		if !st.LastReceived.IsZero() {
			stream["last packet"] = st.LastReceived.Unix()
		}
		p := map[string]any{
			"tag":     tag,
			"created": s.created.Unix(),
			"medias": []any{map[string]any{
				"index": 1, "type": "audio", "protocol": proto, "streams": []any{stream},
			}},
		}
		if other != "" {
			p["in dialogue with"] = other
		}
		if l := s.labels[tag]; l != "" {
			p["label"] = l
		}
		return p
	}
	tags := map[string]any{}
	webTag, plainTag := s.fromTag, s.toTag
	if !s.webOffer {
		webTag, plainTag = s.toTag, s.fromTag
	}
	if webTag != "" { // the answerer's tag is known once it answered
		tags[webTag] = party(webTag, webProto, cs.WebPort, ws, plainTag)
	}
	if plainTag != "" {
		tags[plainTag] = party(plainTag, plainProto, cs.PlainPort, rs, webTag)
	}
	totals := map[string]any{
		"RTP":  map[string]any{"packets": ws.PacketsIn + rs.PacketsIn, "bytes": ws.BytesIn + rs.BytesIn, "errors": ws.Dropped + rs.Dropped},
		"RTCP": map[string]any{"packets": 0, "bytes": 0, "errors": 0},
	}
	return map[string]any{
		"created":     s.created.Unix(),
		"created_us":  s.created.UnixMicro() % 1e6,
		"last signal": s.last.Unix(),
		"tags":        tags,
		"totals":      totals,
	}
}
