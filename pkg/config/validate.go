package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Codecs the relay can negotiate, in their canonical spelling.
var supportedCodecs = []string{"PCMU", "PCMA", "opus", "G722"}

// DefaultTrunkCodecs is what a trunk with no codecs listed offers: G.711,
// which every SIP peer speaks.
var DefaultTrunkCodecs = []string{"PCMU", "PCMA"}

// normalize puts case-insensitive values into their canonical spelling and
// fills the empty values that have a documented meaning, so that the rest
// of the relay compares exact strings.
func (c *Config) normalize() {
	c.Media.Latching = strings.ToLower(strings.TrimSpace(c.Media.Latching))
	c.Log.Level = strings.ToLower(strings.TrimSpace(c.Log.Level))
	c.Log.Format = strings.ToLower(strings.TrimSpace(c.Log.Format))
	c.CDR.Driver = strings.ToLower(strings.TrimSpace(c.CDR.Driver))
	if c.SIP.Realm == "" {
		c.SIP.Realm = DefaultRealm
	}
	for i := range c.Trunks {
		c.Trunks[i].normalize()
	}
	for i := range c.Users {
		c.Users[i].MediaMode = strings.ToLower(strings.TrimSpace(c.Users[i].MediaMode))
	}
}

// normalize spells t's case-insensitive values canonically and fills its
// empty ones with their documented defaults: the transport of its
// address, media mode auto, SRTP off, e2e_fallback refuse,
// DefaultTrunkCodecs, and for a trunk the relay registers at, the
// register user (Username) and expiry (one hour). Load does it for every configured trunk, and
// CompileTrunk for every trunk the relay calls through; nothing else
// defaults a trunk.
func (t *Trunk) normalize() {
	t.Transport = strings.ToLower(strings.TrimSpace(t.Transport))
	if t.Transport == "" {
		t.Transport = addressTransport(t.Address)
	}
	t.MediaMode = strings.ToLower(strings.TrimSpace(t.MediaMode))
	if t.MediaMode == "" {
		t.MediaMode = "auto"
	}
	t.SRTP = strings.ToLower(strings.TrimSpace(t.SRTP))
	if t.SRTP == "" {
		t.SRTP = "off"
	}
	t.E2EFallback = strings.ToLower(strings.TrimSpace(t.E2EFallback))
	if t.E2EFallback == "" {
		t.E2EFallback = "refuse"
	}
	if t.Register {
		if t.RegisterUser == "" {
			t.RegisterUser = t.Username
		}
		if t.RegisterExpires == 0 {
			t.RegisterExpires = time.Hour
		}
	}
	if len(t.Codecs) == 0 {
		t.Codecs = append([]string(nil), DefaultTrunkCodecs...)
	} else {
		codecs := make([]string, len(t.Codecs))
		for j, name := range t.Codecs {
			codecs[j] = canonicalCodec(name)
		}
		t.Codecs = codecs
	}
}

// canonicalCodec returns the canonical spelling of a supported codec name,
// or name unchanged if it is not supported (Validate then reports it).
func canonicalCodec(name string) string {
	for _, s := range supportedCodecs {
		if strings.EqualFold(strings.TrimSpace(name), s) {
			return s
		}
	}
	return name
}

// addressTransport is the transport an address implies: ";transport=" if
// given, tls for sips:, else udp.
func addressTransport(addr string) string {
	lower := strings.ToLower(addr)
	if i := strings.Index(lower, ";transport="); i >= 0 {
		v := lower[i+len(";transport="):]
		if j := strings.IndexAny(v, ";?"); j >= 0 {
			v = v[:j]
		}
		return v
	}
	if strings.HasPrefix(lower, "sips:") {
		return "tls"
	}
	return "udp"
}

// Validate checks every value. Its errors name the key, e.g.
// `media.port_min: 70000 is not a port`; all problems found are joined.
// Values are compared case-insensitively; Load and LoadFile also normalise
// them, so a Config they return holds canonical spellings.
func (c Config) Validate() error {
	var v validator

	v.listen("http.listen", c.HTTP.Listen, true)
	v.certPair("http", c.HTTP.TLSCert, c.HTTP.TLSKey)
	for _, o := range c.HTTP.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			v.add("http.allowed_origins", "%q is not an origin (scheme://host[:port], or *)", o)
		}
	}

	v.listen("sip.udp_listen", c.SIP.UDPListen, false)
	v.listen("sip.tcp_listen", c.SIP.TCPListen, false)
	v.listen("sip.tls_listen", c.SIP.TLSListen, false)
	v.certPair("sip", c.SIP.TLSCert, c.SIP.TLSKey)
	if c.SIP.TLSListen != "" && (c.SIP.TLSCert == "" || c.SIP.TLSKey == "") {
		v.add("sip.tls_listen", "needs sip.tls_cert and sip.tls_key")
	}
	switch {
	case c.SIP.TLSClientCert != "" && c.SIP.TLSClientKey == "":
		v.add("sip.tls_client_key", "is required with sip.tls_client_cert")
	case c.SIP.TLSClientCert == "" && c.SIP.TLSClientKey != "":
		v.add("sip.tls_client_cert", "is required with sip.tls_client_key")
	}
	if c.SIP.TLSRequireClientCert && c.SIP.TLSCA == "" {
		v.add("sip.tls_require_client_cert", "needs sip.tls_ca to verify client certificates against")
	}
	if c.SIP.UDPListen == "" && c.SIP.TCPListen == "" && c.SIP.TLSListen == "" {
		v.add("sip.udp_listen", "no SIP listener: set at least one of sip.udp_listen, sip.tcp_listen, sip.tls_listen")
	}
	if h := c.SIP.Host; h != "" && !validHost(h) {
		v.add("sip.host", "%q is not a host name or IP address", h)
	}
	v.positive("sip.invite_timeout", c.SIP.InviteTimeout)
	for _, k := range []struct {
		key string
		n   int
	}{{"sip.invite_rate", c.SIP.InviteRate}, {"sip.invite_burst", c.SIP.InviteBurst}, {"sip.options_rate", c.SIP.OptionsRate},
		{"sip.options_burst", c.SIP.OptionsBurst}, {"sip.overload_reply_rate", c.SIP.OverloadReplyRate}} {
		v.intRange(k.key, k.n, 1, 1_000_000)
	}
	v.positive("sip.tcp_message_timeout", c.SIP.TCPMessageTimeout)
	v.positive("sip.tcp_idle_timeout", c.SIP.TCPIdleTimeout)
	v.intRange("sip.max_conns", c.SIP.MaxConns, 1, 10_000_000)
	v.intRange("sip.max_conns_per_source", c.SIP.MaxConnsPerSource, 1, 10_000_000)
	switch strings.ToLower(c.CDR.Driver) {
	case "sqlite":
		if c.CDR.DSN != "" {
			v.add("cdr.dsn", "is for cdr.driver postgres; the sqlite driver writes to cdr.path")
		}
	case "postgres":
		if c.CDR.DSN == "" {
			v.add("cdr.dsn", "is required with cdr.driver postgres")
		} else if u, err := url.Parse(c.CDR.DSN); strings.Contains(c.CDR.DSN, "://") &&
			(err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql")) {
			// The value is not echoed: it may hold a password.
			v.add("cdr.dsn", "is not a postgres:// or postgresql:// URL")
		}
	default:
		v.add("cdr.driver", "%q is not a CDR driver (sqlite, postgres)", c.CDR.Driver)
	}
	if t := c.HTTP.AdminToken; t != "" && (len(t) < 16 || strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r > '~' })) {
		// The value itself is never echoed: it is a secret.
		v.add("http.admin_token", "must be at least 16 printable ASCII characters without spaces")
	}
	v.positive("http.ws_idle_timeout", c.HTTP.WSIdleTimeout)
	v.positive("http.ws_ping_interval", c.HTTP.WSPingInterval)
	v.intRange("http.max_conns", c.HTTP.MaxConns, 1, 10_000_000)
	v.intRange("http.max_conns_per_source", c.HTTP.MaxConnsPerSource, 1, 10_000_000)
	v.intRange("sip.user_max_calls", c.SIP.UserMaxCalls, 0, 1_000_000)
	v.intRange("sip.user_call_rate", c.SIP.UserCallRate, 0, 1_000_000)

	if _, err := netip.ParseAddr(c.Media.BindIP); err != nil {
		v.add("media.bind_ip", "%q is not an IP address", c.Media.BindIP)
	}
	if c.Media.PublicIP != "" {
		fields := strings.Split(c.Media.PublicIP, ",")
		families := map[bool]bool{}
		for _, f := range fields {
			ip, err := netip.ParseAddr(strings.TrimSpace(f))
			switch {
			case err != nil:
				v.add("media.public_ip", "%q is not an IP address", strings.TrimSpace(f))
				continue
			case ip.IsUnspecified():
				v.add("media.public_ip", "%s cannot be advertised to peers", ip)
			case families[ip.Unmap().Is4()]:
				v.add("media.public_ip", "%q gives two addresses of one family; give at most one IPv4 and one IPv6", c.Media.PublicIP)
			}
			families[ip.Unmap().Is4()] = true
		}
	}
	minOK := v.port("media.port_min", c.Media.PortMin)
	maxOK := v.port("media.port_max", c.Media.PortMax)
	if minOK && maxOK {
		switch {
		case c.Media.PortMin > c.Media.PortMax:
			v.add("media.port_min", "%d is above media.port_max %d", c.Media.PortMin, c.Media.PortMax)
		case firstEven(c.Media.PortMin)+1 > c.Media.PortMax:
			// RTP takes an even port and RTCP the odd one above it.
			v.add("media.port_min", "range %d-%d holds no even/odd RTP/RTCP port pair", c.Media.PortMin, c.Media.PortMax)
		}
	}
	if v.port("media.webrtc_port", c.Media.WebRTCPort) && minOK && maxOK &&
		c.Media.WebRTCPort >= c.Media.PortMin && c.Media.WebRTCPort <= c.Media.PortMax {
		v.add("media.webrtc_port", "%d lies inside the RTP range media.port_min-media.port_max (%d-%d)",
			c.Media.WebRTCPort, c.Media.PortMin, c.Media.PortMax)
	}
	if p := c.Media.ICETCPPort; p != -1 && p != 0 {
		v.port("media.ice_tcp_port", p)
	}
	v.positive("media.timeout", c.Media.Timeout)
	v.oneOf("media.latching", c.Media.Latching, "sdp", "learn")

	v.intRange("transcode.opus_complexity", c.Transcode.OpusComplexity, 0, 10)
	v.intRange("transcode.opus_bitrate", c.Transcode.OpusBitrate, 6000, 510000)
	v.intRange("transcode.opus_packet_loss", c.Transcode.OpusPacketLoss, 0, 100)

	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	if c.Debug.PprofListen != "" {
		v.listen("debug.pprof_listen", c.Debug.PprofListen, true)
		host, _, err := net.SplitHostPort(c.Debug.PprofListen)
		ip := net.ParseIP(host)
		if err == nil && !c.Debug.PprofForce && (ip == nil || !ip.IsLoopback()) && host != "localhost" {
			v.add("debug.pprof_listen", "%q is not a loopback address; profiles expose memory: set debug.pprof_force to serve them there anyway", c.Debug.PprofListen)
		}
	}

	if c.NG.Listen != "" {
		v.listen("ng.listen", c.NG.Listen, true)
	}
	for i, a := range c.NG.Allow {
		if _, err := ParseSource(a); err != nil {
			v.add(fmt.Sprintf("ng.allow[%d]", i), "%q is not an IP address or CIDR prefix", a)
		}
	}

	names := make(map[string]int, len(c.Trunks))
	for i, t := range c.Trunks {
		p := fmt.Sprintf("trunks[%d].", i)
		if t.Name == "" {
			v.add(p+"name", "is required")
		} else if first, dup := names[t.Name]; dup {
			v.add(p+"name", "%q is already the name of trunks[%d]", t.Name, first)
		} else {
			names[t.Name] = i
		}
		if t.Match != "" {
			if _, err := regexp.Compile(t.Match); err != nil {
				v.add(p+"match", "%q is not a regular expression: %v", t.Match, err)
			}
		}
		transport := strings.ToLower(t.Transport)
		if transport == "" {
			transport = addressTransport(t.Address)
		}
		if t.Address == "" {
			v.add(p+"address", "is required")
		} else if err := checkAddress(t.Address, transport); err != nil {
			v.add(p+"address", "%q: %v", t.Address, err)
		}
		v.oneOf(p+"transport", transport, "udp", "tcp", "tls")
		seen := make(map[string]bool, len(t.Codecs))
		for _, name := range t.Codecs {
			canon := canonicalCodec(name)
			switch {
			case !slices.Contains(supportedCodecs, canon):
				v.add(p+"codecs", "%q is not supported (supported: %s)", name, strings.Join(supportedCodecs, ", "))
			case seen[canon]:
				v.add(p+"codecs", "%q is listed twice", name)
			}
			seen[canon] = true
		}
		mode := strings.ToLower(t.MediaMode)
		if mode != "" {
			v.oneOf(p+"media_mode", mode, "auto", "passthrough", "transcode", "e2e")
		}
		if fb := strings.ToLower(t.E2EFallback); fb != "" {
			v.oneOf(p+"e2e_fallback", fb, "refuse", "terminate")
		}
		srtp := strings.ToLower(t.SRTP)
		if srtp != "" {
			v.oneOf(p+"srtp", srtp, "off", "optional", "required", "dtls")
		}
		if (srtp == "optional" || srtp == "required") && transport != "tls" && !t.AllowSDESOverInsecureTransport {
			// SDES puts the SRTP keys in the SDP; over UDP or TCP anyone on
			// the path can read them, so the operator has to ask for it.
			v.add(p+"srtp", "%q (SDES) over %s exposes the keys; use transport tls, srtp dtls, or set allow_sdes_over_insecure_transport", t.SRTP, transport)
		}
		switch t.Ptime {
		case 0, 10, 20, 30, 40:
		default:
			v.add(p+"ptime", "%d is not one of 0 (default 20), 10, 20, 30, 40", t.Ptime)
		}
		validateTrunkInbound(&v, p, t)
	}

	c.validateUsers(&v)

	if c.Trunk != "" {
		if _, isName := names[c.Trunk]; !isName {
			if err := checkAddress(c.Trunk, addressTransport(c.Trunk)); err != nil {
				v.add("trunk", "%q is neither a trunk name nor a SIP address: %v", c.Trunk, err)
			}
		}
	}
	if len(v.errs) == 0 {
		// The checks above name the key; this catches what only the SIP
		// parser the relay routes with refuses.
		if _, err := c.Routes(); err != nil {
			v.errs = append(v.errs, err)
		}
	}
	return v.err()
}

// validator collects problems so that one run reports them all.
type validator struct{ errs []error }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) err() error { return errors.Join(v.errs...) }

func (v *validator) port(key string, p int) bool {
	if p < 1 || p > 65535 {
		v.add(key, "%d is not a port", p)
		return false
	}
	return true
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(key, "%d is outside %d..%d", n, lo, hi)
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.add(key, "%s must be above zero", d)
	}
}

func (v *validator) oneOf(key, value string, allowed ...string) {
	for _, a := range allowed {
		if strings.EqualFold(value, a) {
			return
		}
	}
	v.add(key, "%q is not one of %s", value, strings.Join(allowed, ", "))
}

// listen checks a host:port listen address; port 0 (any free port) is
// allowed because tests start relays side by side.
func (v *validator) listen(key, addr string, required bool) {
	if addr == "" {
		if required {
			v.add(key, "is required")
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "%q is not host:port", addr)
		return
	}
	if host != "" && !validHost(host) {
		v.add(key, "%q: %q is not a host name or IP address", addr, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add(key, "%q: %q is not a port", addr, port)
	}
}

func (v *validator) certPair(section, cert, key string) {
	switch {
	case cert != "" && key == "":
		v.add(section+".tls_key", "is required with %s.tls_cert", section)
	case cert == "" && key != "":
		v.add(section+".tls_cert", "is required with %s.tls_key", section)
	}
}

// checkAddress accepts a SIP URI (sip:, sips:) or host[:port]. It checks
// the shape only (scheme, optional user@, host, port, ;params); signalling
// parses the URI properly when it dials.
func checkAddress(addr, transport string) error {
	rest := addr
	lower := strings.ToLower(addr)
	isURI := strings.HasPrefix(lower, "sip:") || strings.HasPrefix(lower, "sips:")
	if isURI {
		_, rest, _ = strings.Cut(addr, ":")
		if strings.HasPrefix(lower, "sips:") && transport != "tls" {
			return fmt.Errorf("sips: needs transport tls, not %s", transport)
		}
		if i := strings.IndexByte(rest, '?'); i >= 0 {
			rest = rest[:i] // headers play no part in where the trunk is
		}
		var params string
		rest, params, _ = strings.Cut(rest, ";")
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			if i == 0 {
				return errors.New("empty user before @")
			}
			rest = rest[i+1:]
		}
		for _, p := range strings.Split(params, ";") {
			name, value, _ := strings.Cut(p, "=")
			if strings.EqualFold(name, "transport") && !strings.EqualFold(value, transport) {
				return fmt.Errorf("transport=%s in the URI contradicts transport %s", value, transport)
			}
		}
	} else if strings.ContainsAny(addr, "@;?/ ") || strings.Contains(addr, "://") {
		return errors.New("not a SIP URI (sip:host:port) or host:port")
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		// No port: the whole thing must be a host (an IPv6 one in brackets).
		host, port = rest, ""
		if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
			return fmt.Errorf("%q is not a host name or IP address", host)
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if strings.Contains(host, ":") {
			if _, err := netip.ParseAddr(host); err != nil || !strings.HasPrefix(rest, "[") {
				return fmt.Errorf("%q is not host:port (IPv6 addresses go in brackets)", rest)
			}
		}
	}
	if !validHost(host) {
		return fmt.Errorf("%q is not a host name or IP address", host)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q is not a port", port)
		}
	}
	return nil
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$`)

// validHost accepts an IP address (IPv6 with or without brackets) or a DNS name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return true
	}
	return len(h) <= 253 && hostnameRE.MatchString(h)
}

func firstEven(n int) int { return n + n%2 }
