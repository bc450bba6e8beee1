// Package sdp reads and writes the audio part of session descriptions as the
// relay needs them: codec lists, the media address, ptime and direction. It
// parses with github.com/pion/sdp/v3 and keeps only what a leg uses, and
// edits an SDP the relay already sent as text (edit.go: version, direction,
// a=setup, codecs).
package sdp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// Codec is one payload type of an audio m-line.
type Codec struct {
	Name     string // as in rtpmap, case kept: PCMU, PCMA, opus, G722, telephone-event
	PT       uint8
	Clock    uint32
	Channels int
	Fmtp     string
}

// Is reports whether c is the named codec, ignoring case.
func (c Codec) Is(name string) bool { return strings.EqualFold(c.Name, name) }

// Audio is the first audio stream of a session description.
type Audio struct {
	Addr      netip.Addr // connection address (media-level c= wins over session-level)
	Port      int        // 0 means the stream is rejected
	RTCPPort  int        // a=rtcp, 0 if absent
	Proto     string     // RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF ...
	Codecs    []Codec    // in offer order, telephone-event included
	Ptime     int        // ms, 0 if absent
	Direction string     // sendrecv, sendonly, recvonly, inactive
	RTCPMux   bool
	Crypto    []string // raw a=crypto values
	Attrs     []psdp.Attribute
}

// Errors returned by Parse.
var (
	ErrNoAudio = errors.New("sdp: no audio stream")
)

// staticCodecs are the RFC 3551 payload types an offer may use without rtpmap.
var staticCodecs = map[uint8]Codec{
	0: {Name: "PCMU", PT: 0, Clock: 8000, Channels: 1},
	8: {Name: "PCMA", PT: 8, Clock: 8000, Channels: 1},
	9: {Name: "G722", PT: 9, Clock: 8000, Channels: 1},
}

// Parse reads body and returns its first audio stream.
func Parse(body []byte) (*psdp.SessionDescription, Audio, error) {
	var s psdp.SessionDescription
	if err := s.UnmarshalString(string(body)); err != nil {
		return nil, Audio{}, fmt.Errorf("sdp: %w", err)
	}
	for _, md := range s.MediaDescriptions {
		if md.MediaName.Media != "audio" {
			continue
		}
		a, err := audioFrom(&s, md)
		return &s, a, err
	}
	return &s, Audio{}, ErrNoAudio
}

func audioFrom(s *psdp.SessionDescription, md *psdp.MediaDescription) (Audio, error) {
	a := Audio{
		Port:      md.MediaName.Port.Value,
		Proto:     strings.Join(md.MediaName.Protos, "/"),
		Direction: "sendrecv",
		Attrs:     md.Attributes,
	}
	if a.Port < 0 || a.Port > 65535 {
		return a, fmt.Errorf("sdp: bad port %d", a.Port)
	}
	ci := md.ConnectionInformation
	if ci == nil {
		ci = s.ConnectionInformation
	}
	if ci != nil && ci.Address != nil {
		// An address may carry a /ttl suffix; a hostname is not accepted.
		host, _, _ := strings.Cut(ci.Address.Address, "/")
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return a, fmt.Errorf("sdp: connection address %q: %w", host, err)
		}
		a.Addr = ip.Unmap()
	}
	for _, attr := range s.Attributes {
		if isDirection(attr.Key) {
			a.Direction = attr.Key
		}
	}
	rtpmap := map[uint8]Codec{}
	fmtp := map[uint8]string{}
	for _, attr := range md.Attributes {
		switch {
		case attr.Key == "rtpmap":
			c, err := parseRtpmap(attr.Value)
			if err != nil {
				return a, err
			}
			rtpmap[c.PT] = c
		case attr.Key == "fmtp":
			pt, rest, ok := strings.Cut(attr.Value, " ")
			if n, err := strconv.ParseUint(pt, 10, 7); ok && err == nil {
				fmtp[uint8(n)] = rest
			}
		case attr.Key == "ptime":
			if n, err := strconv.Atoi(strings.TrimSpace(attr.Value)); err == nil && n > 0 && n <= 200 {
				a.Ptime = n
			}
		case attr.Key == "rtcp":
			f, _, _ := strings.Cut(attr.Value, " ")
			if n, err := strconv.Atoi(f); err == nil && n > 0 && n < 65536 {
				a.RTCPPort = n
			}
		case attr.Key == "rtcp-mux":
			a.RTCPMux = true
		case attr.Key == "crypto":
			a.Crypto = append(a.Crypto, attr.Value)
		case isDirection(attr.Key):
			a.Direction = attr.Key
		}
	}
	for _, f := range md.MediaName.Formats {
		n, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			return a, fmt.Errorf("sdp: bad payload type %q", f)
		}
		pt := uint8(n)
		c, ok := rtpmap[pt]
		if !ok {
			if c, ok = staticCodecs[pt]; !ok {
				continue // dynamic type without rtpmap: unusable, skip it
			}
		}
		c.Fmtp = fmtp[pt]
		a.Codecs = append(a.Codecs, c)
	}
	return a, nil
}

// WriteRTPMaps writes the a=rtpmap and a=fmtp lines of codecs.
func WriteRTPMaps(b *strings.Builder, codecs []Codec) {
	for _, c := range codecs {
		if c.Channels > 1 {
			fmt.Fprintf(b, "a=rtpmap:%d %s/%d/%d\r\n", c.PT, c.Name, c.Clock, c.Channels)
		} else {
			fmt.Fprintf(b, "a=rtpmap:%d %s/%d\r\n", c.PT, c.Name, c.Clock)
		}
		if c.Fmtp != "" {
			fmt.Fprintf(b, "a=fmtp:%d %s\r\n", c.PT, c.Fmtp)
		}
	}
}

// AnswerDirection is the direction that answers an offered one (RFC 3264
// §6.1): sendonly and recvonly swap, inactive stays, anything else is
// sendrecv.
func AnswerDirection(offered string) string {
	switch offered {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	}
	return "sendrecv"
}

func isDirection(k string) bool {
	switch k {
	case "sendrecv", "sendonly", "recvonly", "inactive":
		return true
	}
	return false
}

func parseRtpmap(v string) (Codec, error) {
	pt, enc, ok := strings.Cut(strings.TrimSpace(v), " ")
	n, err := strconv.ParseUint(pt, 10, 7)
	if !ok || err != nil {
		return Codec{}, fmt.Errorf("sdp: bad rtpmap %q", v)
	}
	parts := strings.Split(enc, "/")
	if len(parts) < 2 || parts[0] == "" {
		return Codec{}, fmt.Errorf("sdp: bad rtpmap %q", v)
	}
	clock, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil || clock == 0 {
		return Codec{}, fmt.Errorf("sdp: bad rtpmap clock %q", v)
	}
	c := Codec{Name: parts[0], PT: uint8(n), Clock: uint32(clock), Channels: 1}
	if len(parts) > 2 {
		ch, err := strconv.Atoi(parts[2])
		if err != nil || ch < 1 || ch > 8 {
			return Codec{}, fmt.Errorf("sdp: bad rtpmap channels %q", v)
		}
		c.Channels = ch
	}
	return c, nil
}

// Find returns the first codec named name, ignoring case.
func (a Audio) Find(name string) (Codec, bool) {
	for _, c := range a.Codecs {
		if c.Is(name) {
			return c, true
		}
	}
	return Codec{}, false
}

// DTMF returns the telephone-event codec at the given clock rate.
func (a Audio) DTMF(clock uint32) (Codec, bool) {
	for _, c := range a.Codecs {
		if c.Is("telephone-event") && c.Clock == clock {
			return c, true
		}
	}
	return Codec{}, false
}

// Offer is what the relay puts in an SDP for a plain RTP leg.
type Offer struct {
	SessionID uint64
	Version   uint64
	Addr      netip.Addr
	Port      int
	Proto     string // default RTP/AVP
	Codecs    []Codec
	Ptime     int
	Direction string // default sendrecv
	Crypto    []string
	Extra     []string // extra media-level attribute lines, without "a="
}

// Marshal writes o as an SDP body.
func (o Offer) Marshal() []byte {
	var b strings.Builder
	ipv := "IP4"
	if o.Addr.Is6() {
		ipv = "IP6"
	}
	proto := o.Proto
	if proto == "" {
		proto = "RTP/AVP"
	}
	fmt.Fprintf(&b, "v=0\r\no=mediarelay %d %d IN %s %s\r\ns=mediarelay\r\nc=IN %s %s\r\nt=0 0\r\n",
		o.SessionID, o.Version, ipv, o.Addr, ipv, o.Addr)
	fmt.Fprintf(&b, "m=audio %d %s", o.Port, proto)
	for _, c := range o.Codecs {
		fmt.Fprintf(&b, " %d", c.PT)
	}
	b.WriteString("\r\n")
	WriteRTPMaps(&b, o.Codecs)
	if o.Ptime > 0 {
		fmt.Fprintf(&b, "a=ptime:%d\r\n", o.Ptime)
	}
	for _, c := range o.Crypto {
		fmt.Fprintf(&b, "a=crypto:%s\r\n", c)
	}
	for _, e := range o.Extra {
		fmt.Fprintf(&b, "a=%s\r\n", e)
	}
	dir := o.Direction
	if dir == "" {
		dir = "sendrecv"
	}
	b.WriteString("a=" + dir + "\r\n")
	return []byte(b.String())
}
