// Package config holds mediarelay's configuration: one YAML file, every key
// also settable by flag and by MEDIARELAY_* environment variable.
package config

import (
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Config is the whole configuration of a relay. The YAML key of a nested
// field is "section.key"; its flag is "--section-key" and its environment
// variable MEDIARELAY_SECTION_KEY (dots and dashes become underscores).
type Config struct {
	HTTP      HTTP      `yaml:"http"`
	SIP       SIP       `yaml:"sip"`
	Media     Media     `yaml:"media"`
	Transcode Transcode `yaml:"transcode"`
	CDR       CDR       `yaml:"cdr"`
	Log       Log       `yaml:"log"`
	Debug     Debug     `yaml:"debug"`
	NG        NG        `yaml:"ng"`
	// Trunk is the default trunk (a SIP URI such as sip:10.0.0.1:5060;transport=tcp,
	// host:port, or the Name of an entry of Trunks) for browser calls that
	// match no entry of Trunks.
	Trunk string `yaml:"trunk"`
	// Trunks are tried in order; the first whose Match matches the called user wins.
	Trunks []Trunk `yaml:"trunks"`
	// Users may REGISTER their browsers over WS/WSS and be called from trunks.
	Users []User `yaml:"users,omitempty"`
}

// User is one browser user the registrar authenticates. Give Password, or
// one or both stored hashes (HA1 = H(name:realm:password) in hex, for the
// relay's sip.realm), so the config file need not hold plain passwords.
type User struct {
	Name      string `yaml:"name"`
	Password  string `yaml:"password"`
	HA1MD5    string `yaml:"ha1_md5"`
	HA1SHA256 string `yaml:"ha1_sha256"`
	// DIDs are numbers that, called from a trunk, ring this user.
	DIDs []string `yaml:"dids,omitempty"`
	// MediaMode, when e2e, keeps DTLS-SRTP end to end on calls from
	// trunks into this user's browsers (the trunk's own media_mode e2e
	// does the same); "" leaves it to the trunk.
	MediaMode string `yaml:"media_mode,omitempty"`
}

// HTTP is the browser-facing listener: the softphone page, /ws, /healthz, /metrics.
type HTTP struct {
	Listen  string `yaml:"listen"`
	TLSCert string `yaml:"tls_cert"` // when set with TLSKey, serve HTTPS and WSS
	TLSKey  string `yaml:"tls_key"`
	// AllowedOrigins are the web origins (scheme://host[:port]) whose
	// pages may open the SIP WebSocket, besides the relay's own (the
	// request's Host) and clients that send no Origin (not browsers).
	// "*" allows any. Other upgrades get 403.
	AllowedOrigins []string `yaml:"allowed_origins,omitempty"`
	// MaxConns and MaxConnsPerSource cap open connections to this
	// listener, in total and per source IP; more are closed at accept.
	MaxConns          int `yaml:"max_conns"`
	MaxConnsPerSource int `yaml:"max_conns_per_source"`
	// WSIdleTimeout closes a SIP WebSocket that has had no registration
	// and no call for this long.
	WSIdleTimeout time.Duration `yaml:"ws_idle_timeout"`
	// WSPingInterval is how often a WebSocket with a registration or a
	// call is pinged; one that sends nothing back for two intervals is closed.
	WSPingInterval time.Duration `yaml:"ws_ping_interval"`
	// AdminToken, when set, is the bearer token the call API (/api/calls)
	// requires; when empty the API answers only to loopback clients.
	AdminToken string `yaml:"admin_token"`
}

// SIP is the trunk-facing signalling.
type SIP struct {
	UDPListen string `yaml:"udp_listen"`
	TCPListen string `yaml:"tcp_listen"`
	TLSListen string `yaml:"tls_listen"`
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	TLSCA     string `yaml:"tls_ca"` // PEM bundle: trunks' servers and (with TLSRequireClientCert) clients are verified against it; empty means the system roots for trunks
	// TLSClientCert and TLSClientKey, when set, are presented to trunks
	// that ask for a client certificate (mutual TLS).
	TLSClientCert string `yaml:"tls_client_cert"`
	TLSClientKey  string `yaml:"tls_client_key"`
	// TLSRequireClientCert makes the TLS listener demand a client
	// certificate that verifies against TLSCA.
	TLSRequireClientCert bool `yaml:"tls_require_client_cert"`
	// TLSInsecureSkipVerify turns off verification of trunks' TLS
	// certificates. Anyone on the path can then read SDES keys: test only.
	TLSInsecureSkipVerify bool `yaml:"tls_insecure_skip_verify"`
	// Host is the address the relay puts in Via and Contact towards trunks;
	// empty means the media public IP, else the bind IP, else 127.0.0.1.
	Host string `yaml:"host"`
	// InviteTimeout bounds how long an outbound INVITE may go unanswered
	// before the browser gets 408.
	InviteTimeout time.Duration `yaml:"invite_timeout"`
	// Echo enables the built-in sip:echo@relay endpoint.
	Echo bool `yaml:"echo"`
	// Realm is the digest realm of the registrar; empty means DefaultRealm
	// (Load fills it in).
	Realm string `yaml:"realm"`
	// UsersFile holds more users, one "name:realm:ha1" line each (htdigest
	// style; MD5 HA1 of 32 hex digits or SHA-256 HA1 of 64, a name may have
	// both on two lines). Lines starting with # are comments.
	UsersFile string `yaml:"users_file"`
	// RegisterMaxExpires caps the expiry a browser may ask for.
	RegisterMaxExpires time.Duration `yaml:"register_max_expires"`
	// RegisterRate is how many REGISTERs per second one source IP may
	// send on average (burst RegisterBurst); more get 503 with Retry-After.
	RegisterRate  int `yaml:"register_rate"`
	RegisterBurst int `yaml:"register_burst"`
	// InviteRate and OptionsRate are how many new INVITEs and OPTIONS per
	// second one source IP may send on average (bursts of InviteBurst and
	// OptionsBurst); more get 503 with Retry-After. Trunks' configured
	// sources are not limited.
	InviteRate   int `yaml:"invite_rate"`
	InviteBurst  int `yaml:"invite_burst"`
	OptionsRate  int `yaml:"options_rate"`
	OptionsBurst int `yaml:"options_burst"`
	// OverloadReplyRate is how many of those 503s per second one source
	// gets (burst twice that); beyond it, its requests are dropped unanswered.
	OverloadReplyRate int `yaml:"overload_reply_rate"`
	// AuthFailures is how many wrong passwords for one user from one source
	// IP are answered with a new challenge; after that, 403 for AuthLockout.
	AuthFailures int           `yaml:"auth_failures"`
	AuthLockout  time.Duration `yaml:"auth_lockout"`
	// DigestAlgorithms are the challenges a REGISTER gets, in this order
	// (RFC 8760: SHA-256, MD5), and the only ones accepted. The default,
	// SHA-256 then MD5, also suits clients that keep only the last
	// challenge and know only MD5 (JsSIP).
	DigestAlgorithms []string `yaml:"digest_algorithms"`
	// TCPMessageTimeout closes a SIP TCP or TLS connection that has not
	// completed its first message, or a message it started, within this
	// long (CRLF keepalives count as messages).
	TCPMessageTimeout time.Duration `yaml:"tcp_message_timeout"`
	// TCPIdleTimeout closes a SIP TCP or TLS connection with no traffic
	// either way for this long.
	TCPIdleTimeout time.Duration `yaml:"tcp_idle_timeout"`
	// MaxConns and MaxConnsPerSource cap open SIP TCP and TLS connections
	// (each listener), in total and per source IP; more are closed at accept.
	MaxConns          int `yaml:"max_conns"`
	MaxConnsPerSource int `yaml:"max_conns_per_source"`
	// TokenSecret, when set, lets browsers authenticate with time-limited
	// credentials minted from it as coturn's REST API does: username
	// "EXPIRY:USER" (Unix seconds), password base64(HMAC-SHA1(secret,
	// username)). Expired credentials are refused.
	TokenSecret string `yaml:"token_secret"`
	// AnonymousCalls lets any WebSocket client call trunks without
	// registering or authenticating (the behaviour before 2026-11): a
	// toll-fraud risk on a public address, warned about at start.
	AnonymousCalls bool `yaml:"anonymous_calls"`
	// UserMaxCalls caps the calls one authenticated user may have at once
	// (0: no cap); more get 403.
	UserMaxCalls int `yaml:"user_max_calls"`
	// UserCallRate is how many call attempts per minute one authenticated
	// user may make (0: no limit); more get 503 with Retry-After.
	UserCallRate int `yaml:"user_call_rate"`
}

// Media is the RTP side: addresses, ports, timeouts.
type Media struct {
	// BindIP is where RTP sockets and the WebRTC UDP port listen.
	BindIP string `yaml:"bind_ip"`
	// PublicIP is advertised in SDP and ICE candidates (NAT 1:1); empty
	// means BindIP. A dual-stack relay (bind_ip "::") gives one IPv4 and
	// one IPv6 address, comma-separated: browsers get candidates for both,
	// and each SIP peer the address of its own family.
	PublicIP string `yaml:"public_ip"`
	PortMin  int    `yaml:"port_min"`
	PortMax  int    `yaml:"port_max"`
	// WebRTCPort is the one UDP port every WebRTC leg shares (ICE UDP mux).
	WebRTCPort int `yaml:"webrtc_port"`
	// ICETCPPort is where passive ICE-TCP candidates (RFC 6544) listen,
	// for browsers whose network blocks UDP; they rank below UDP, so UDP
	// wins where it works. -1 (the default) is webrtc_port's number; 0
	// offers no TCP candidates.
	ICETCPPort int `yaml:"ice_tcp_port"`
	// Timeout hangs up a call when either leg has received no RTP for this long.
	Timeout time.Duration `yaml:"timeout"`
	// Latching is "sdp" (accept RTP only from the SDP address) or "learn"
	// (once the peer's SDP is known, the first source to send 5 valid
	// packets in a row, one SSRC with rising sequence numbers, is latched;
	// others are dropped).
	Latching string `yaml:"latching"`
}

// Transcode holds the Opus encoder settings used when a call is transcoded.
type Transcode struct {
	OpusComplexity int  `yaml:"opus_complexity"`
	OpusBitrate    int  `yaml:"opus_bitrate"`
	OpusFEC        bool `yaml:"opus_fec"`
	OpusDTX        bool `yaml:"opus_dtx"`
	// OpusPacketLoss is the expected loss in percent the encoder plans FEC for.
	OpusPacketLoss int `yaml:"opus_packet_loss"`
}

// CDR says where call detail records go.
type CDR struct {
	// Driver is sqlite (the default: the file at Path) or postgres (the
	// server DSN names, which several relays may share).
	Driver string `yaml:"driver"`
	Path   string `yaml:"path"` // SQLite file; empty disables CDRs with the sqlite driver
	// DSN is the PostgreSQL connection string (postgres://user:pass@host/db
	// or key=value pairs) for the postgres driver. It is never logged.
	DSN string `yaml:"dsn"`
	// Spool is the file where, with the postgres driver, CDRs wait while
	// the server cannot take them (written after it is back, even after a
	// restart); empty: they wait in memory only.
	Spool string `yaml:"spool"`
}

// Log sets the log level and format.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Debug holds operators' diagnostics, all off by default.
type Debug struct {
	// PprofListen, when set, serves Go's net/http/pprof profiles on this
	// address (host:port). It must be a loopback address unless
	// PprofForce is set: profiles reveal memory contents.
	PprofListen string `yaml:"pprof_listen"`
	PprofForce  bool   `yaml:"pprof_force"`
}

// NG is rtpengine's "ng" control protocol (bencode over UDP), with which
// Kamailio and OpenSIPS drive the relay as a media node.
type NG struct {
	// Listen, when set, opens the ng control socket on this UDP address
	// (host:port). It takes commands that allocate ports and open media
	// paths: firewall it so that only the SIP proxies reach it.
	Listen string `yaml:"listen"`
	// Allow lists the addresses or CIDR prefixes of the proxies whose
	// commands are served; datagrams from any other source are dropped
	// unanswered. Empty means loopback only.
	Allow []string `yaml:"allow,omitempty"`
}

// Trunk is one SIP peer the relay sends calls to and accepts calls from.
type Trunk struct {
	Name string `yaml:"name"`
	// Match is a regular expression on the called user; empty matches nothing
	// (the trunk is then reachable only as the default).
	Match string `yaml:"match"`
	// Address is the trunk's SIP URI or host:port.
	Address string `yaml:"address"`
	// Transport is udp, tcp or tls; Load fills an empty one from the
	// address (";transport=", tls for sips:, else udp).
	Transport string `yaml:"transport"`
	// Codecs in preference order: PCMU, PCMA, opus, G722. Load spells them
	// canonically and fills an empty list with DefaultTrunkCodecs.
	Codecs []string `yaml:"codecs"`
	// MediaMode is auto, passthrough, transcode or e2e (DTLS-SRTP end to
	// end: the relay forwards DTLS and SRTP without holding a key); Load
	// turns "" into auto.
	MediaMode string `yaml:"media_mode"`
	// E2EFallback says what an e2e call does when the far end cannot do
	// DTLS-SRTP: refuse (488 with a Warning) or terminate (the relay
	// terminates the browser's DTLS-SRTP and passes the audio through, as
	// in passthrough). Load turns "" into refuse.
	E2EFallback string `yaml:"e2e_fallback"`
	// SRTP is off, optional, required (SDES) or dtls; Load turns "" into off.
	SRTP string `yaml:"srtp"`
	// AllowSDESOverInsecureTransport permits SDES keys over UDP/TCP, where anyone on the path can read them.
	AllowSDESOverInsecureTransport bool   `yaml:"allow_sdes_over_insecure_transport"`
	Username                       string `yaml:"username"`
	Password                       string `yaml:"password"`
	Ptime                          int    `yaml:"ptime"` // ms; 0 means 20
	// Sources are the IP addresses or CIDR prefixes calls from this trunk
	// come from; empty means the address of Address (when it is an IP).
	// INVITEs from any other source get 403.
	Sources []string `yaml:"sources,omitempty"`
	// InboundUsername and InboundPassword, when set, let the trunk's
	// INVITEs from sources not listed authenticate with digest instead.
	InboundUsername string `yaml:"inbound_username"`
	InboundPassword string `yaml:"inbound_password"`
	// Register makes the relay REGISTER to the trunk as RegisterUser
	// (Load fills an empty one with Username) with Username and Password,
	// keeping it refreshed.
	Register        bool          `yaml:"register"`
	RegisterUser    string        `yaml:"register_user"`
	RegisterExpires time.Duration `yaml:"register_expires"` // asked for; Load turns 0 into 1h
	// CallerID, when set, is the number presented to this trunk for every
	// call (From and P-Asserted-Identity) instead of the browser's user.
	CallerID string `yaml:"caller_id"`
	// NumberFormat is how caller numbers are written towards this trunk and
	// read from it: "" (as they are) or e164 (+country code; national
	// numbers with a leading 0 get CountryCode).
	NumberFormat string `yaml:"number_format"`
	CountryCode  string `yaml:"country_code"`
	// AssertIdentity adds P-Asserted-Identity to INVITEs sent to this trunk.
	AssertIdentity bool `yaml:"assert_identity"`
	// PassHeaders names headers copied from the other leg's INVITE onto the
	// INVITE sent to this trunk, and from this trunk's INVITEs to browsers;
	// no other header of one side reaches the other.
	PassHeaders []string `yaml:"pass_headers,omitempty"`
	// DTMF is how digits go to this trunk: rfc4733 (telephone-event RTP,
	// the default) or info (SIP INFO application/dtmf-relay). INFO from
	// the trunk is always accepted and played to the browser as RFC 4733.
	DTMF string `yaml:"dtmf"`

	// Set by CompileTrunk: Match compiled, Address and Sources parsed.
	match   *regexp.Regexp
	uri     sip.Uri
	sources []netip.Prefix
}

// DefaultRealm is the digest realm of browsers' credentials when sip.realm
// is not set.
const DefaultRealm = "mediarelay"

// Default returns the embedded defaults: a demo relay on loopback with the echo endpoint.
func Default() Config {
	return Config{
		HTTP: HTTP{
			Listen:            "127.0.0.1:8080",
			MaxConns:          4096,
			MaxConnsPerSource: 128,
			WSIdleTimeout:     60 * time.Second,
			WSPingInterval:    30 * time.Second,
		},
		SIP: SIP{
			UDPListen:          ":5060",
			TCPListen:          ":5060",
			InviteTimeout:      32 * time.Second,
			Echo:               true,
			Realm:              DefaultRealm,
			RegisterMaxExpires: time.Hour,
			RegisterRate:       10,
			RegisterBurst:      30,
			InviteRate:         5,
			InviteBurst:        20,
			OptionsRate:        10,
			OptionsBurst:       30,
			OverloadReplyRate:  5,
			AuthFailures:       3,
			AuthLockout:        time.Minute,
			DigestAlgorithms:   []string{"SHA-256", "MD5"},
			UserMaxCalls:       10,
			UserCallRate:       30,
			TCPMessageTimeout:  30 * time.Second,
			TCPIdleTimeout:     10 * time.Minute,
			MaxConns:           4096,
			MaxConnsPerSource:  128,
		},
		Media: Media{
			BindIP:     "127.0.0.1",
			PortMin:    20000,
			PortMax:    39999,
			WebRTCPort: 40000,
			ICETCPPort: -1,
			Timeout:    30 * time.Second,
			Latching:   "sdp",
		},
		Transcode: Transcode{
			OpusComplexity: 5,
			OpusBitrate:    32000,
			OpusFEC:        true,
			OpusDTX:        false,
			OpusPacketLoss: 5,
		},
		CDR: CDR{Driver: "sqlite", Path: "mediarelay.db", Spool: "mediarelay-cdr.spool"},
		Log: Log{Level: "info", Format: "text"},
	}
}

// PublicAddrs parses PublicIP: none, one address, or one per family.
// Validate reports what does not parse.
func (m Media) PublicAddrs() []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Split(m.PublicIP, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(f)); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
