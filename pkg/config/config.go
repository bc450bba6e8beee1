// Package config holds mediarelay's configuration: one YAML file, every key
// also settable by flag and by MEDIARELAY_* environment variable.
package config

import "time"

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
	// Trunk is the default trunk (a SIP URI such as sip:10.0.0.1:5060;transport=tcp,
	// host:port, or the Name of an entry of Trunks) for browser calls that
	// match no entry of Trunks.
	Trunk string `yaml:"trunk"`
	// Trunks are tried in order; the first whose Match matches the called user wins.
	Trunks []Trunk `yaml:"trunks"`
}

// HTTP is the browser-facing listener: the softphone page, /ws, /healthz, /metrics.
type HTTP struct {
	Listen  string `yaml:"listen"`
	TLSCert string `yaml:"tls_cert"` // when set with TLSKey, serve HTTPS and WSS
	TLSKey  string `yaml:"tls_key"`
}

// SIP is the trunk-facing signalling.
type SIP struct {
	UDPListen string `yaml:"udp_listen"`
	TCPListen string `yaml:"tcp_listen"`
	TLSListen string `yaml:"tls_listen"`
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	TLSCA     string `yaml:"tls_ca"`
	// Host is the address the relay puts in Via and Contact towards trunks;
	// empty means the media public IP, else the bind IP, else 127.0.0.1.
	Host string `yaml:"host"`
	// InviteTimeout bounds how long an outbound INVITE may go unanswered
	// before the browser gets 408.
	InviteTimeout time.Duration `yaml:"invite_timeout"`
	// Echo enables the built-in sip:echo@relay endpoint.
	Echo bool `yaml:"echo"`
}

// Media is the RTP side: addresses, ports, timeouts.
type Media struct {
	// BindIP is where RTP sockets and the WebRTC UDP port listen.
	BindIP string `yaml:"bind_ip"`
	// PublicIP is advertised in SDP and ICE candidates (NAT 1:1); empty means BindIP.
	PublicIP string `yaml:"public_ip"`
	PortMin  int    `yaml:"port_min"`
	PortMax  int    `yaml:"port_max"`
	// WebRTCPort is the one UDP port every WebRTC leg shares (ICE UDP mux).
	WebRTCPort int `yaml:"webrtc_port"`
	// Timeout hangs up a call when either leg has received no RTP for this long.
	Timeout time.Duration `yaml:"timeout"`
	// Latching is "sdp" (accept RTP only from the SDP address) or "learn"
	// (strict first-packet learning: the first source is latched, others dropped).
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
	Path string `yaml:"path"` // SQLite file; empty disables CDRs
}

// Log sets the log level and format.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
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
	// MediaMode is auto, passthrough or transcode; Load turns "" into auto.
	MediaMode string `yaml:"media_mode"`
	// SRTP is off, optional, required (SDES) or dtls; Load turns "" into off.
	SRTP string `yaml:"srtp"`
	// AllowSDESOverInsecureTransport permits SDES keys over UDP/TCP, where anyone on the path can read them.
	AllowSDESOverInsecureTransport bool   `yaml:"allow_sdes_over_insecure_transport"`
	Username                       string `yaml:"username"`
	Password                       string `yaml:"password"`
	Ptime                          int    `yaml:"ptime"` // ms; 0 means 20
}

// Default returns the embedded defaults: a demo relay on loopback with the echo endpoint.
func Default() Config {
	return Config{
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
		SIP: SIP{
			UDPListen:     ":5060",
			TCPListen:     ":5060",
			InviteTimeout: 32 * time.Second,
			Echo:          true,
		},
		Media: Media{
			BindIP:     "127.0.0.1",
			PortMin:    20000,
			PortMax:    39999,
			WebRTCPort: 40000,
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
		CDR: CDR{Path: "mediarelay.db"},
		Log: Log{Level: "info", Format: "text"},
	}
}
