// Package ng serves rtpengine's "ng" control protocol, so that SIP proxies
// (Kamailio's and OpenSIPS's rtpengine modules) can drive mediarelay as a
// media node: each UDP datagram is a cookie, a space and a bencoded
// dictionary; the reply repeats the cookie. The calls themselves are the
// Handler's business (package signaling implements it with the relay's legs).
package ng

import (
	"fmt"
	"net/netip"
	"strings"
)

// Request is one parsed ng command.
type Request struct {
	Command   string // lower case: ping, offer, answer, delete, query, list, statistics
	CallID    string
	FromTag   string
	ToTag     string
	ViaBranch string
	SDP       string
	Flags     Flags
	// Source is the proxy that sent the command.
	Source netip.AddrPort
	// Dict is the whole decoded request, for keys this package does not parse.
	Dict map[string]any
}

// Flags are the offer/answer options of rtpengine this relay understands,
// gathered from both spellings a proxy may use: a dictionary key
// ("ICE": "remove") or an item of the "flags" list ("ICE=remove",
// "codec-strip-PCMA", "trust-address"). Unknown flags are ignored, as
// rtpengine ignores them.
type Flags struct {
	// TransportProtocol is what the other side speaks: RTP/AVP, RTP/SAVP,
	// RTP/AVPF, RTP/SAVPF or UDP/TLS/RTP/SAVPF ("" keeps the offer's).
	TransportProtocol string
	ICE               string   // force, remove, default ("" if not given)
	DTLS              string   // off, passive, active ("" if not given)
	SDES              []string // off, or suite selections (only-X, no-X)
	RTCPMux           []string // offer, demux, accept, require
	Replace           []string // origin, session-connection
	Direction         []string // interface names; one interface here, recorded only
	ReceivedFrom      netip.Addr
	TrustAddress      bool
	SIPSourceAddress  bool
	GenerateMid       bool
	Label             string
	Codec             CodecFlags
	// Other are flags from the "flags" list this package has no meaning for.
	Other []string
}

// CodecFlags are the "codec" dictionary's lists (and their codec-X-NAME
// spellings in the flags list).
type CodecFlags struct {
	Strip, Mask, Transcode, Accept []string
}

// Limits on what a request may hold.
const (
	maxIDLen   = 256
	maxSDPLen  = 32 * 1024
	maxListLen = 64
)

// parseRequest reads the common keys of a decoded request dictionary.
func parseRequest(d map[string]any, src netip.AddrPort) (*Request, error) {
	r := &Request{Source: src, Dict: d}
	cmd, err := str(d, "command", 32)
	if err != nil {
		return nil, err
	}
	if cmd == "" {
		return nil, fmt.Errorf("no command")
	}
	r.Command = strings.ToLower(cmd)
	for _, f := range []struct {
		key string
		dst *string
		max int
	}{
		{"call-id", &r.CallID, maxIDLen},
		{"from-tag", &r.FromTag, maxIDLen},
		{"to-tag", &r.ToTag, maxIDLen},
		{"via-branch", &r.ViaBranch, maxIDLen},
		{"sdp", &r.SDP, maxSDPLen},
		{"label", &r.Flags.Label, maxIDLen},
	} {
		if *f.dst, err = str(d, f.key, f.max); err != nil {
			return nil, err
		}
	}
	if err := r.Flags.parse(d); err != nil {
		return nil, err
	}
	return r, nil
}

// str returns d[key] as a string ("" if absent); another type, or a string
// longer than max, is an error.
func str(d map[string]any, key string, max int) (string, error) {
	v, ok := d[key]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is not a string", key)
	}
	if len(s) > max {
		return "", fmt.Errorf("%s longer than %d bytes", key, max)
	}
	return s, nil
}

// strList returns d[key] as a list of strings: a list, or one string that
// holds space-separated items (both occur in the wild).
func strList(d map[string]any, key string) ([]string, error) {
	v, ok := d[key]
	if !ok {
		return nil, nil
	}
	var out []string
	switch x := v.(type) {
	case string:
		out = strings.Fields(x)
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s holds a non-string item", key)
			}
			out = append(out, s)
		}
	default:
		return nil, fmt.Errorf("%s is not a list", key)
	}
	if len(out) > maxListLen {
		return nil, fmt.Errorf("%s has more than %d items", key, maxListLen)
	}
	for _, s := range out {
		if len(s) > maxIDLen {
			return nil, fmt.Errorf("%s holds an item longer than %d bytes", key, maxIDLen)
		}
	}
	return out, nil
}

// norm spells a flag as rtpengine compares them: lower case, with dashes
// for spaces and underscores.
func norm(s string) string {
	return strings.ToLower(strings.NewReplacer(" ", "-", "_", "-").Replace(strings.TrimSpace(s)))
}

func (f *Flags) parse(d map[string]any) error {
	var err error
	if f.TransportProtocol, err = str(d, "transport-protocol", 32); err != nil {
		return err
	}
	f.TransportProtocol = strings.ToUpper(strings.TrimSpace(f.TransportProtocol))
	if f.ICE, err = str(d, "ICE", 32); err != nil {
		return err
	}
	if f.DTLS, err = str(d, "DTLS", 32); err != nil {
		return err
	}
	lists := []struct {
		key string
		dst *[]string
	}{
		{"SDES", &f.SDES}, {"rtcp-mux", &f.RTCPMux}, {"replace", &f.Replace}, {"direction", &f.Direction},
	}
	for _, l := range lists {
		if *l.dst, err = strList(d, l.key); err != nil {
			return err
		}
	}
	if rf, err := strList(d, "received-from"); err != nil {
		return err
	} else if len(rf) == 2 {
		a, perr := netip.ParseAddr(rf[1])
		if perr != nil {
			return fmt.Errorf("received-from: bad address")
		}
		f.ReceivedFrom = a
	} else if len(rf) != 0 {
		return fmt.Errorf("received-from: want [family, address]")
	}
	if v, ok := d["codec"]; ok {
		cd, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("codec is not a dictionary")
		}
		for _, l := range []struct {
			key string
			dst *[]string
		}{{"strip", &f.Codec.Strip}, {"mask", &f.Codec.Mask}, {"transcode", &f.Codec.Transcode}, {"accept", &f.Codec.Accept}} {
			if *l.dst, err = strList(cd, l.key); err != nil {
				return fmt.Errorf("codec: %w", err)
			}
		}
	}
	items, err := strList(d, "flags")
	if err != nil {
		return err
	}
	for _, it := range items {
		f.flag(it)
	}
	f.ICE, f.DTLS = norm(f.ICE), norm(f.DTLS)
	for i := range f.RTCPMux {
		f.RTCPMux[i] = norm(f.RTCPMux[i])
	}
	for i := range f.Replace {
		f.Replace[i] = norm(f.Replace[i])
	}
	return nil
}

// flag applies one item of the "flags" list.
func (f *Flags) flag(item string) {
	k, v, hasValue := strings.Cut(item, "=")
	n := norm(k)
	if hasValue {
		switch n {
		case "ice":
			f.ICE = v
		case "dtls":
			f.DTLS = v
		case "transport-protocol":
			f.TransportProtocol = strings.ToUpper(v)
		case "rtcp-mux":
			f.RTCPMux = append(f.RTCPMux, v)
		case "sdes":
			f.SDES = append(f.SDES, v)
		case "label":
			f.Label = v
		default:
			f.Other = append(f.Other, item)
		}
		return
	}
	switch {
	case n == "trust-address":
		f.TrustAddress = true
	case n == "sip-source-address":
		f.SIPSourceAddress = true
	case n == "generate-mid":
		f.GenerateMid = true
	case n == "rtp/avp" || n == "rtp/savp" || n == "rtp/avpf" || n == "rtp/savpf" || n == "udp/tls/rtp/savpf":
		f.TransportProtocol = strings.ToUpper(k)
	case strings.HasPrefix(n, "replace-"):
		f.Replace = append(f.Replace, strings.TrimPrefix(n, "replace-"))
	case strings.HasPrefix(n, "rtcp-mux-"):
		f.RTCPMux = append(f.RTCPMux, strings.TrimPrefix(n, "rtcp-mux-"))
	case strings.HasPrefix(n, "codec-strip-"):
		f.Codec.Strip = append(f.Codec.Strip, k[len("codec-strip-"):])
	case strings.HasPrefix(n, "codec-mask-"):
		f.Codec.Mask = append(f.Codec.Mask, k[len("codec-mask-"):])
	case strings.HasPrefix(n, "codec-transcode-"):
		f.Codec.Transcode = append(f.Codec.Transcode, k[len("codec-transcode-"):])
	case strings.HasPrefix(n, "transcode-"):
		f.Codec.Transcode = append(f.Codec.Transcode, k[len("transcode-"):])
	case strings.HasPrefix(n, "codec-accept-"):
		f.Codec.Accept = append(f.Codec.Accept, k[len("codec-accept-"):])
	default:
		f.Other = append(f.Other, item)
	}
}

// WantsWebRTC says whether the flags ask for the other side of the call
// to be WebRTC: transport-protocol names DTLS, or else ICE is forced (or
// removed); without either, it speaks what the offer does (offerWebRTC).
func (f *Flags) WantsWebRTC(offerWebRTC bool) bool {
	switch {
	case f.TransportProtocol != "":
		return strings.Contains(f.TransportProtocol, "TLS")
	case f.ICE == "force" || f.ICE == "force-relay":
		return true
	case f.ICE == "remove":
		return false
	}
	return offerWebRTC
}

// AllowsSDES says whether the SDES flags let an SDES crypto suite
// through: an only-X names the suites allowed, a no-X one refused.
func (f *Flags) AllowsSDES(suite string) bool {
	only := false
	for _, s := range f.SDES {
		n := strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
		if strings.HasPrefix(n, "ONLY_") {
			only = true
			if strings.EqualFold(n[5:], suite) {
				return true
			}
		}
		if strings.HasPrefix(n, "NO_") && strings.EqualFold(n[3:], suite) {
			return false
		}
	}
	return !only
}

// Has reports whether list holds name (compared as flags are).
func Has(list []string, name string) bool {
	for _, x := range list {
		if norm(x) == norm(name) {
			return true
		}
	}
	return false
}
