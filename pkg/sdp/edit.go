package sdp

import (
	"strconv"
	"strings"
)

// The relay edits an SDP it has already sent as text: a new version, the
// audio direction, a=setup, the codecs of a re-offer. The rest of the
// body stays byte for byte as it was.

// Version is the o= version of an SDP; 1 when it has none.
func Version(body string) uint64 {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "o=") {
			f := strings.Fields(l)
			if len(f) >= 3 {
				n, _ := strconv.ParseUint(f[2], 10, 64)
				return n
			}
		}
	}
	return 1
}

// Rewrite sets the o= version, the audio direction and (if setup is not
// empty) a=setup of an SDP.
func Rewrite(body, dir string, version uint64, setup string) string {
	lines := strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n")
	var out []string
	inAudio, placed := false, false
	for _, l := range lines {
		if l == "" {
			continue
		}
		switch {
		case strings.HasPrefix(l, "o="):
			f := strings.Fields(l)
			if len(f) >= 6 {
				f[2] = strconv.FormatUint(version, 10)
				l = strings.Join(f, " ")
			}
		case strings.HasPrefix(l, "m="):
			inAudio = strings.HasPrefix(l, "m=audio")
		case l == "a=sendrecv" || l == "a=sendonly" || l == "a=recvonly" || l == "a=inactive":
			continue
		case setup != "" && strings.HasPrefix(l, "a=setup:"):
			l = "a=setup:" + setup
		}
		if inAudio && !placed && strings.HasPrefix(l, "a=") {
			out = append(out, "a="+dir)
			placed = true
		}
		out = append(out, l)
	}
	if !placed {
		out = append(out, "a="+dir)
	}
	return strings.Join(out, "\r\n") + "\r\n"
}

// SetCodecs replaces the payload types of an SDP's first audio m-line,
// with their rtpmap and fmtp lines, by codecs; the rest of the SDP stays.
func SetCodecs(body string, codecs []Codec) string {
	var pts []string
	for _, c := range codecs {
		pts = append(pts, strconv.Itoa(int(c.PT)))
	}
	var b strings.Builder
	WriteRTPMaps(&b, codecs)
	attrs := strings.Split(strings.TrimSuffix(b.String(), "\r\n"), "\r\n")
	if b.Len() == 0 {
		attrs = nil
	}
	var out []string
	inAudio, placed := false, false
	for _, l := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n") {
		if l == "" {
			continue
		}
		switch {
		case strings.HasPrefix(l, "m="):
			if inAudio && !placed {
				out, placed = append(out, attrs...), true
			}
			inAudio = !placed && strings.HasPrefix(l, "m=audio ")
			if f := strings.Fields(l); inAudio && len(f) >= 3 {
				l = strings.Join(append(f[:3:3], pts...), " ")
			}
		case inAudio && (strings.HasPrefix(l, "a=rtpmap:") || strings.HasPrefix(l, "a=fmtp:")):
			continue
		case inAudio && !placed && strings.HasPrefix(l, "a="):
			out, placed = append(out, attrs...), true
		}
		out = append(out, l)
	}
	if inAudio && !placed {
		out = append(out, attrs...)
	}
	return strings.Join(out, "\r\n") + "\r\n"
}

// EffectiveDirection is the audio's direction, where a 0.0.0.0
// connection address is the old (RFC 2543) way to say inactive.
func (a Audio) EffectiveDirection() string {
	if a.Addr.IsValid() && a.Addr.IsUnspecified() {
		return "inactive"
	}
	if a.Direction == "" {
		return "sendrecv"
	}
	return a.Direction
}
