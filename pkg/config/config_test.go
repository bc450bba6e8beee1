package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// writeFile puts content in a temporary YAML file and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mediarelay.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultsLoadAndValidate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	c, err := Load(nil, nil)
	if err != nil {
		t.Fatalf("Load(nil, nil) = %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load(nil, nil) = %+v, want Default() %+v", c, Default())
	}
}

func TestFullExample(t *testing.T) {
	c, err := LoadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		HTTP: HTTP{Listen: "0.0.0.0:8443", TLSCert: "/etc/mediarelay/web.crt", TLSKey: "/etc/mediarelay/web.key",
			AllowedOrigins: []string{"https://app.example.com"}, MaxConns: 2000, MaxConnsPerSource: 50,
			WSIdleTimeout: 2 * time.Minute, WSPingInterval: 20 * time.Second},
		SIP: SIP{
			UDPListen: "0.0.0.0:5060", TCPListen: "0.0.0.0:5060", TLSListen: "0.0.0.0:5061",
			TLSCert: "/etc/mediarelay/sip.crt", TLSKey: "/etc/mediarelay/sip.key", TLSCA: "/etc/mediarelay/ca.pem",
			Host: "relay.example.com", InviteTimeout: 20 * time.Second, Echo: false,
			Realm: "example.com", RegisterMaxExpires: 30 * time.Minute, RegisterRate: 5, RegisterBurst: 10,
			InviteRate: 7, InviteBurst: 9, OptionsRate: 11, OptionsBurst: 13, OverloadReplyRate: 3,
			AuthFailures: 5, AuthLockout: 2 * time.Minute, DigestAlgorithms: []string{"SHA-256", "MD5"},
			TokenSecret: "web-app-secret", AnonymousCalls: true, UserMaxCalls: 4, UserCallRate: 12,
			TCPMessageTimeout: 20 * time.Second, TCPIdleTimeout: 5 * time.Minute, MaxConns: 3000, MaxConnsPerSource: 40,
		},
		Media: Media{
			BindIP: "10.0.0.5", PublicIP: "203.0.113.7", PortMin: 30000, PortMax: 34999,
			WebRTCPort: 3478, ICETCPPort: 443, Timeout: 90 * time.Second, Latching: "learn",
		},
		Transcode: Transcode{OpusComplexity: 3, OpusBitrate: 24000, OpusFEC: false, OpusDTX: true, OpusPacketLoss: 10},
		CDR:       CDR{Driver: "sqlite", Path: "/var/lib/mediarelay/cdr.db", Spool: "mediarelay-cdr.spool"},
		Log:       Log{Level: "debug", Format: "json"},
		NG:        NG{Listen: "10.0.0.5:22222", Allow: []string{"10.0.0.2", "10.0.1.0/24"}},
		Trunk:     "carrier",
		Trunks: []Trunk{
			{
				Name: "carrier", Match: `^\+?1[0-9]{10}$`, Address: "sip:sbc.carrier.example:5061;transport=tls",
				Transport: "tls", Codecs: []string{"PCMA", "PCMU"}, MediaMode: "passthrough", E2EFallback: "refuse", SRTP: "required",
				Username: "acct42", Password: "s3cret", Ptime: 20,
				Sources: []string{"198.51.100.0/24", "203.0.113.9"},
			},
			{
				Name: "pbx", Match: `^[0-9]{3,4}$`, Address: "192.168.1.10:5080", Transport: "udp",
				Codecs: []string{"opus", "G722", "PCMU"}, MediaMode: "transcode", E2EFallback: "refuse", SRTP: "optional",
				AllowSDESOverInsecureTransport: true, Ptime: 40,
			},
		},
		Users: []User{
			{Name: "alice", Password: "wonderland", DIDs: []string{"+1 555 010 2000"}},
			{Name: "bob", HA1MD5: "0123456789abcdef0123456789abcdef"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("LoadFile(full.yaml) =\n%+v\nwant\n%+v", c, want)
	}

	// Round trip: what the relay would write back loads to the same thing.
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadFile(writeFile(t, string(out)))
	if err != nil {
		t.Fatalf("reloading marshalled config: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(again, c) {
		t.Errorf("round trip changed the config:\n%+v\nwant\n%+v", again, c)
	}
}

func TestPrecedence(t *testing.T) {
	path := writeFile(t, "media:\n  port_min: 21000\n  timeout: 10s\nlog:\n  level: warn\n")
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantPort int
		wantTO   time.Duration
		wantLvl  string
	}{
		{"defaults", nil, nil, 20000, 30 * time.Second, "info"},
		{"file over defaults", []string{"--config", path}, nil, 21000, 10 * time.Second, "warn"},
		{"file from env", nil, []string{"MEDIARELAY_CONFIG=" + path}, 21000, 10 * time.Second, "warn"},
		{"env over file", []string{"--config", path}, []string{"MEDIARELAY_MEDIA_PORT_MIN=22000"}, 22000, 10 * time.Second, "warn"},
		{
			"flag over env over file", []string{"--config", path, "--media-port-min", "23000", "--log-level=error"},
			[]string{"MEDIARELAY_MEDIA_PORT_MIN=22000", "MEDIARELAY_MEDIA_TIMEOUT=5s"}, 23000, 5 * time.Second, "error",
		},
		{"single dash flag", []string{"-media-port-min=24000"}, nil, 24000, 30 * time.Second, "info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Media.PortMin != tt.wantPort || c.Media.Timeout != tt.wantTO || c.Log.Level != tt.wantLvl {
				t.Errorf("port_min=%d timeout=%v level=%s, want %d %v %s",
					c.Media.PortMin, c.Media.Timeout, c.Log.Level, tt.wantPort, tt.wantTO, tt.wantLvl)
			}
		})
	}
}

func TestFlagAndEnvTypes(t *testing.T) {
	c, err := Load(
		[]string{"--sip-echo=false", "--transcode-opus-dtx", "--trunk", "sip:10.0.0.1:5060;transport=tcp"},
		[]string{"MEDIARELAY_SIP_INVITE_TIMEOUT=1m", "MEDIARELAY_MEDIA_PUBLIC_IP=198.51.100.1", "PATH=/bin", "MEDIARELAY_TRANSCODE_OPUS_FEC=0"},
	)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.Echo || !c.Transcode.OpusDTX || c.Transcode.OpusFEC || c.SIP.InviteTimeout != time.Minute ||
		c.Media.PublicIP != "198.51.100.1" || c.Trunk != "sip:10.0.0.1:5060;transport=tcp" {
		t.Errorf("got %+v", c)
	}
}

func TestTrunksInline(t *testing.T) {
	env := []string{`MEDIARELAY_TRUNKS=[{"name":"a","address":"10.0.0.1:5060","codecs":["pcma"]}]`}
	c, err := Load(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Trunks) != 1 || c.Trunks[0].Name != "a" || c.Trunks[0].Codecs[0] != "PCMA" ||
		c.Trunks[0].MediaMode != "auto" || c.Trunks[0].SRTP != "off" || c.Trunks[0].Transport != "udp" {
		t.Errorf("trunks = %+v", c.Trunks)
	}
	// The flag replaces the environment's list.
	c, err = Load([]string{"--trunks", "- {name: b, address: 'sips:pbx.example'}"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Trunks) != 1 || c.Trunks[0].Name != "b" || c.Trunks[0].Transport != "tls" {
		t.Errorf("trunks = %+v", c.Trunks)
	}
	if _, err := Load(nil, []string{`MEDIARELAY_TRUNKS=[{"name":"a","adress":"x"}]`}); err == nil ||
		!strings.Contains(err.Error(), `unknown key "trunks[0].adress"`) {
		t.Errorf("misspelt inline key: err = %v", err)
	}
}

func TestHelp(t *testing.T) {
	if _, err := Load([]string{"-h"}, nil); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Load(-h) = %v, want flag.ErrHelp", err)
	}
	var buf bytes.Buffer
	Usage(&buf)
	for _, want := range []string{"--media-port-min int", "MEDIARELAY_MEDIA_PORT_MIN", "(default 20000)", "--trunk string", "--config FILE", "--sip-invite-timeout duration", "(default 32s)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Usage lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestErrorsNameTheKey checks that each kind of bad input is refused with
// a message naming the key (or variable, or flag) at fault.
func TestErrorsNameTheKey(t *testing.T) {
	const goodTrunk = "trunks:\n  - name: a\n    address: 10.0.0.1:5060\n"
	tests := []struct {
		name string
		yaml string
		env  []string
		args []string
		want string
	}{
		// Unknown names.
		{name: "unknown yaml key", yaml: "media:\n  port_min: 20000\n\n  prot_min: 4\n", want: `unknown key "media.prot_min" (line 4)`},
		{name: "unknown top key", yaml: "medai: {}\n", want: `unknown key "medai" (line 1)`},
		{name: "unknown trunk key", yaml: goodTrunk + "    codec: [PCMU]\n", want: `unknown key "trunks[0].codec" (line 4)`},
		{name: "duplicate key", yaml: "log:\n  level: info\n  level: debug\n", want: `duplicate key "log.level" (line 3, first at line 2)`},
		{name: "unknown env", env: []string{"MEDIARELAY_MEDIA_PORTMIN=1"}, want: "unknown variable MEDIARELAY_MEDIA_PORTMIN"},
		{name: "unknown flag", args: []string{"--media-portmin=1"}, want: "flag provided but not defined: -media-portmin"},
		{name: "stray argument", args: []string{"extra"}, want: `unexpected argument "extra"`},
		{name: "second document", yaml: "log: {}\n---\nlog: {}\n", want: "second YAML document"},
		{name: "section not a mapping", yaml: "media: 5\n", want: "media: line 1: expected a mapping"},

		// Types.
		{name: "yaml bad int", yaml: "media:\n  port_min: lots\n", want: `media.port_min: line 2: "lots" is not an integer`},
		{name: "yaml bad duration", yaml: "media:\n  timeout: soon\n", want: `media.timeout: line 2: "soon" is not a duration`},
		{name: "yaml bare int duration", yaml: "media:\n  timeout: 30\n", want: `media.timeout: line 2: "30" is not a duration`},
		{name: "yaml list for scalar", yaml: "log:\n  level: [a]\n", want: "log.level: line 2: expected a single value, not a list"},
		{name: "env bad duration", env: []string{"MEDIARELAY_SIP_INVITE_TIMEOUT=10"}, want: `MEDIARELAY_SIP_INVITE_TIMEOUT: sip.invite_timeout: "10" is not a duration`},
		{name: "env bad bool", env: []string{"MEDIARELAY_SIP_ECHO=yes please"}, want: `sip.echo: "yes please" is not a boolean`},
		{name: "flag bad int", args: []string{"--media-port-max=x"}, want: `flag --media-port-max: media.port_max: "x" is not an integer`},

		// Values.
		{name: "port out of range", yaml: "media:\n  port_min: 70000\n", want: "media.port_min: 70000 is not a port"},
		{name: "port_min above port_max", env: []string{"MEDIARELAY_MEDIA_PORT_MIN=30000", "MEDIARELAY_MEDIA_PORT_MAX=29000"}, want: "media.port_min: 30000 is above media.port_max 29000"},
		{name: "range too small", args: []string{"--media-port-min=20000", "--media-port-max=20000"}, want: "media.port_min: range 20000-20000 holds no even/odd"},
		{name: "range no pair", args: []string{"--media-port-min=20001", "--media-port-max=20002"}, want: "media.port_min: range 20001-20002 holds no even/odd"},
		{name: "webrtc port in range", args: []string{"--media-webrtc-port=25000"}, want: "media.webrtc_port: 25000 lies inside the RTP range"},
		{name: "webrtc port zero", args: []string{"--media-webrtc-port=0"}, want: "media.webrtc_port: 0 is not a port"},
		{name: "public ip two v4", args: []string{"--media-public-ip=203.0.113.1,203.0.113.2"}, want: "media.public_ip: \"203.0.113.1,203.0.113.2\" gives two addresses of one family"},
		{name: "public ip bad second", args: []string{"--media-public-ip=203.0.113.1,nope"}, want: "media.public_ip: \"nope\" is not an IP address"},
		{name: "ice-tcp port out of range", args: []string{"--media-ice-tcp-port=70000"}, want: "media.ice_tcp_port: 70000 is not a port"},
		{name: "ice-tcp port negative", args: []string{"--media-ice-tcp-port=-2"}, want: "media.ice_tcp_port: -2 is not a port"},
		{name: "bad bind ip", args: []string{"--media-bind-ip=localhost"}, want: `media.bind_ip: "localhost" is not an IP address`},
		{name: "bad public ip", args: []string{"--media-public-ip=1.2.3"}, want: `media.public_ip: "1.2.3" is not an IP address`},
		{name: "unspecified public ip", args: []string{"--media-public-ip=0.0.0.0"}, want: "media.public_ip: 0.0.0.0 cannot be advertised"},
		{name: "latching", args: []string{"--media-latching=any"}, want: `media.latching: "any" is not one of sdp, learn`},
		{name: "media timeout zero", args: []string{"--media-timeout=0s"}, want: "media.timeout: 0s must be above zero"},
		{name: "invite timeout negative", args: []string{"--sip-invite-timeout=-1s"}, want: "sip.invite_timeout: -1s must be above zero"},
		{name: "log level", args: []string{"--log-level=verbose"}, want: `log.level: "verbose" is not one of debug, info, warn, error`},
		{name: "log format", args: []string{"--log-format=xml"}, want: `log.format: "xml" is not one of text, json`},
		{name: "http listen empty", args: []string{"--http-listen="}, want: "http.listen: is required"},
		{name: "http listen bad", args: []string{"--http-listen=8080"}, want: `http.listen: "8080" is not host:port`},
		{name: "sip listen bad port", args: []string{"--sip-udp-listen=:99999"}, want: `sip.udp_listen: ":99999": "99999" is not a port`},
		{name: "no sip listener", args: []string{"--sip-udp-listen=", "--sip-tcp-listen="}, want: "sip.udp_listen: no SIP listener"},
		{name: "http cert without key", args: []string{"--http-tls-cert=a.pem"}, want: "http.tls_key: is required with http.tls_cert"},
		{name: "sip key without cert", args: []string{"--sip-tls-key=a.key"}, want: "sip.tls_cert: is required with sip.tls_key"},
		{name: "sip tls listen without cert", args: []string{"--sip-tls-listen=:5061"}, want: "sip.tls_listen: needs sip.tls_cert and sip.tls_key"},
		{name: "sip host", args: []string{"--sip-host=bad host"}, want: `sip.host: "bad host" is not a host name`},
		{name: "opus complexity", args: []string{"--transcode-opus-complexity=11"}, want: "transcode.opus_complexity: 11 is outside 0..10"},
		{name: "opus bitrate", args: []string{"--transcode-opus-bitrate=5999"}, want: "transcode.opus_bitrate: 5999 is outside 6000..510000"},
		{name: "opus loss", args: []string{"--transcode-opus-packet-loss=-1"}, want: "transcode.opus_packet_loss: -1 is outside 0..100"},
		{name: "default trunk", args: []string{"--trunk=sip:"}, want: `trunk: "sip:" is neither a trunk name nor a SIP address`},

		// Trunks.
		{name: "trunk name required", yaml: "trunks:\n  - address: 10.0.0.1\n", want: "trunks[0].name: is required"},
		{name: "trunk name unique", yaml: goodTrunk + "  - name: a\n    address: 10.0.0.2\n", want: `trunks[1].name: "a" is already the name of trunks[0]`},
		{name: "trunk address required", yaml: "trunks:\n  - name: a\n", want: "trunks[0].address: is required"},
		{name: "trunk address bad", yaml: "trunks:\n  - name: a\n    address: http://x/\n", want: `trunks[0].address: "http://x/": not a SIP URI`},
		{name: "trunk address bad port", yaml: "trunks:\n  - name: a\n    address: sip:10.0.0.1:0\n", want: `trunks[0].address: "sip:10.0.0.1:0": "0" is not a port`},
		{name: "trunk address bad ipv6", yaml: "trunks:\n  - name: a\n    address: 'fe80::1:5060'\n", want: `trunks[0].address: "fe80::1:5060": "fe80::1:5060" is not host:port`},
		{name: "trunk transport", yaml: goodTrunk + "    transport: sctp\n", want: `trunks[0].transport: "sctp" is not one of udp, tcp, tls`},
		{name: "trunk uri transport conflict", yaml: "trunks:\n  - name: a\n    address: sip:h;transport=tcp\n    transport: udp\n", want: "trunks[0].address: \"sip:h;transport=tcp\": transport=tcp in the URI contradicts transport udp"},
		{name: "sips over udp", yaml: "trunks:\n  - name: a\n    address: sips:h\n    transport: udp\n", want: "trunks[0].address: \"sips:h\": sips: needs transport tls"},
		{name: "trunk codec", yaml: goodTrunk + "  - name: b\n    address: h:5060\n    codecs: [PCMU, G729]\n", want: `trunks[1].codecs: "G729" is not supported`},
		{name: "trunk codec twice", yaml: goodTrunk + "    codecs: [PCMU, pcmu]\n", want: `trunks[0].codecs: "PCMU" is listed twice`},
		{name: "trunk media mode", yaml: goodTrunk + "    media_mode: relay\n", want: `trunks[0].media_mode: "relay" is not one of auto, passthrough, transcode`},
		{name: "trunk e2e fallback", yaml: goodTrunk + "    media_mode: e2e\n    e2e_fallback: transcode\n", want: `trunks[0].e2e_fallback: "transcode" is not one of refuse, terminate`},
		{name: "user media mode", yaml: "users:\n  - name: alice\n    password: x\n    media_mode: transcode\n", want: `users[0].media_mode: "transcode" is not one of e2e`},
		{name: "trunk srtp", yaml: goodTrunk + "    srtp: yes\n", want: `trunks[0].srtp: "yes" is not one of off, optional, required, dtls`},
		{name: "sdes over udp", yaml: goodTrunk + "    srtp: required\n", want: `trunks[0].srtp: "required" (SDES) over udp exposes the keys`},
		{name: "sdes over tcp", yaml: goodTrunk + "    transport: tcp\n    srtp: optional\n", want: `trunks[0].srtp: "optional" (SDES) over tcp exposes the keys`},
		{name: "trunk ptime", yaml: goodTrunk + "    ptime: 25\n", want: "trunks[0].ptime: 25 is not one of"},
		{name: "trunk match", yaml: goodTrunk + "    match: '(['\n", want: `trunks[0].match: "([" is not a regular expression`},
		{name: "trunks not a list", yaml: "trunks: {name: a}\n", want: "trunks: line 1: expected a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				args = append([]string{"--config", writeFile(t, tt.yaml)}, args...)
			}
			_, err := Load(args, tt.env)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Default()
	c.Media.PortMin = 0
	c.Log.Level = "loud"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "media.port_min") || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("Validate() = %v, want both media.port_min and log.level", err)
	}
}

func TestAcceptedAddresses(t *testing.T) {
	for _, addr := range []string{
		"10.0.0.1", "10.0.0.1:5060", "pbx.example.com", "pbx.example.com:5080", "[2001:db8::1]:5060", "[2001:db8::1]",
		"sip:10.0.0.1", "sip:pbx.example.com:5060;transport=udp", "sip:user@pbx.example.com", "SIP:[2001:db8::1]:5060",
		"sip:trunk@10.0.0.1:5060;lr?X-Foo=bar",
	} {
		if err := checkAddress(addr, addressTransport(addr)); err != nil {
			t.Errorf("checkAddress(%q) = %v", addr, err)
		}
	}
}

func TestLoadFileIgnoresEnvironment(t *testing.T) {
	t.Setenv("MEDIARELAY_MEDIA_PORT_MIN", "22000")
	c, err := LoadFile(writeFile(t, "media:\n  port_min: 21000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Media.PortMin != 21000 {
		t.Errorf("port_min = %d, want 21000", c.Media.PortMin)
	}
	if _, err := LoadFile(writeFile(t, "media:\n  port_min: 70000\n")); err == nil ||
		!strings.Contains(err.Error(), "media.port_min: 70000 is not a port") {
		t.Errorf("LoadFile(bad) = %v", err)
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("LoadFile(missing) succeeded")
	}
	if c, err := LoadFile(writeFile(t, "")); err != nil || !reflect.DeepEqual(c, Default()) {
		t.Errorf("LoadFile(empty) = %+v, %v; want defaults", c, err)
	}
}

// TestPprofListenLoopbackOnly: the profiling listener is refused on a
// public address unless forced, and accepted on loopback by flag and env.
func TestPprofListenLoopbackOnly(t *testing.T) {
	if _, err := Load([]string{"--debug-pprof-listen", "0.0.0.0:6060"}, nil); err == nil || !strings.Contains(err.Error(), "debug.pprof_listen") {
		t.Fatalf("public pprof address: err = %v, want one naming debug.pprof_listen", err)
	}
	c, err := Load([]string{"--debug-pprof-listen", "0.0.0.0:6060", "--debug-pprof-force"}, nil)
	if err != nil || c.Debug.PprofListen != "0.0.0.0:6060" {
		t.Fatalf("forced: %+v, %v", c.Debug, err)
	}
	c, err = Load(nil, []string{"MEDIARELAY_DEBUG_PPROF_LISTEN=127.0.0.1:6060"})
	if err != nil || c.Debug.PprofListen != "127.0.0.1:6060" {
		t.Fatalf("loopback by env: %+v, %v", c.Debug, err)
	}
}

// TestDualStackPublicIP: public_ip takes one IPv4 and one IPv6 address.
func TestDualStackPublicIP(t *testing.T) {
	c := Default()
	c.Media.BindIP = "::"
	c.Media.PublicIP = "203.0.113.7, 2001:db8::7"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got := c.Media.PublicAddrs()
	if len(got) != 2 || got[0].String() != "203.0.113.7" || got[1].String() != "2001:db8::7" {
		t.Fatalf("PublicAddrs() = %v", got)
	}
}

// TestRoutes: the routing table holds the trunks in order, compiled and
// with their defaults; the default trunk is the entry `trunk` names (the
// same trunk, not a copy) or one at the address it gives; a bad pattern or
// address is an error naming the trunk.
func TestRoutes(t *testing.T) {
	c := Default()
	c.Trunks = []Trunk{
		{Name: "carrier", Match: `^\+?1[0-9]{10}$`, Address: "sip:10.0.0.1", Codecs: []string{"pcma"}},
		{Name: "pbx", Match: `^[0-9]{3,4}$`, Address: "10.0.0.3:5080", Register: true, Username: "pbx1", Password: "x"},
	}
	c.Trunk = "carrier"
	rt, err := c.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if len(rt.Trunks) != 2 || rt.Default != rt.Trunks[0] {
		t.Fatalf("named default: trunks %v, default %p, want the entry %p", rt.Trunks, rt.Default, rt.Trunks[0])
	}
	if d := rt.Default; d.Codecs[0] != "PCMA" || d.Transport != "udp" || d.URI().Host != "10.0.0.1" {
		t.Fatalf("named default trunk = %+v", d)
	}
	for user, want := range map[string]string{"+15550102000": "carrier", "1234": "pbx", "alice": "carrier"} {
		if got := rt.Route(user); got == nil || got.Name != want {
			t.Errorf("Route(%q) = %v, want %s", user, got, want)
		}
	}
	if u := rt.Route("1234").URI(); u.Host != "10.0.0.3" || u.Port != 5080 {
		t.Errorf("pbx address parsed as %s:%d", u.Host, u.Port)
	}
	// A trunk the relay registers at registers as its username, for an hour.
	if p := rt.Trunks[1]; p.RegisterUser != "pbx1" || p.RegisterExpires != time.Hour {
		t.Errorf("pbx registers as %q for %s, want pbx1 for 1h", p.RegisterUser, p.RegisterExpires)
	}
	// Sources default to the address's IP.
	if src := rt.Trunks[1].SourcePrefixes(); len(src) != 1 || src[0].String() != "10.0.0.3/32" {
		t.Errorf("pbx sources = %v, want 10.0.0.3/32", src)
	}

	c.Trunk = "sip:10.0.0.2;transport=tcp"
	rt, err = c.Routes()
	if err != nil {
		t.Fatal(err)
	}
	d := rt.Default
	if d == nil || d.Name != "default" || d.Transport != "tcp" || d.MediaMode != "auto" || d.SRTP != "off" ||
		!slices.Equal(d.Codecs, DefaultTrunkCodecs) || d.URI().Host != "10.0.0.2" || rt.Route("alice") != d {
		t.Fatalf("addressed default trunk = %+v", d)
	}

	c.Trunk = ""
	if rt, err = c.Routes(); err != nil || rt.Default != nil || rt.Route("alice") != nil {
		t.Fatalf("no trunk set: default %v, err %v", rt.Default, err)
	}

	for _, tc := range []struct {
		trunk Trunk
		want  string
	}{
		{Trunk{Name: "bad-re", Match: "(", Address: "sip:10.0.0.1"}, "trunks[2] (bad-re): match"},
		{Trunk{Name: "bad-addr", Address: "sip:10.0.0.1:port"}, "trunks[2] (bad-addr): address"},
		{Trunk{Name: "bad-src", Address: "sip:10.0.0.1", Sources: []string{"sbc.example"}}, "trunks[2] (bad-src): sources"},
	} {
		bad := c
		bad.Trunks = append(slices.Clone(c.Trunks), tc.trunk)
		if _, err := bad.Routes(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Routes error %v, want one with %q", tc.trunk.Name, err, tc.want)
		}
	}
	bad := c
	bad.Trunk = "sip:10.0.0.1:port"
	if _, err := bad.Routes(); err == nil || !strings.HasPrefix(err.Error(), "trunk: address") {
		t.Errorf("bad default address: Routes error %v", err)
	}
}

func TestAdminToken(t *testing.T) {
	c, err := Load(nil, []string{"MEDIARELAY_HTTP_ADMIN_TOKEN=0123456789abcdef-xyz"})
	if err != nil || c.HTTP.AdminToken != "0123456789abcdef-xyz" {
		t.Fatalf("env admin token: %q, %v", c.HTTP.AdminToken, err)
	}
	if c, err := Load([]string{"--http-admin-token=flag-token-0123456789"}, nil); err != nil || c.HTTP.AdminToken != "flag-token-0123456789" {
		t.Fatalf("flag admin token: %q, %v", c.HTTP.AdminToken, err)
	}
	for _, bad := range []string{"short", "has a space in it 0123", "tab\there-0123456789", "non-ascii-é-0123456789"} {
		_, err := Load(nil, []string{"MEDIARELAY_HTTP_ADMIN_TOKEN=" + bad})
		if err == nil || !strings.Contains(err.Error(), "http.admin_token") {
			t.Errorf("%q: error %v, want one naming http.admin_token", bad, err)
		} else if strings.Contains(err.Error(), bad) {
			t.Errorf("the error repeats the secret: %v", err)
		}
	}
}

func TestCDRDriver(t *testing.T) {
	c, err := Load([]string{"--cdr-driver=Postgres", "--cdr-dsn=postgres://billing:hunter2@db.example/cdr"}, nil)
	if err != nil || c.CDR.Driver != "postgres" || c.CDR.DSN != "postgres://billing:hunter2@db.example/cdr" {
		t.Fatalf("postgres driver: %+v, %v", c.CDR, err)
	}
	if c, err := Load(nil, nil); err != nil || c.CDR.Driver != "sqlite" {
		t.Fatalf("default driver: %+v, %v", c.CDR, err)
	}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"MEDIARELAY_CDR_DRIVER=mysql"}, `cdr.driver: "mysql" is not a CDR driver`},
		{[]string{"MEDIARELAY_CDR_DRIVER=postgres"}, "cdr.dsn: is required"},
		{[]string{"MEDIARELAY_CDR_DRIVER=postgres", "MEDIARELAY_CDR_DSN=mysql://u:hunter2@h/db"}, "cdr.dsn: is not a postgres://"},
		{[]string{"MEDIARELAY_CDR_DSN=postgres://u:hunter2@h/db"}, "cdr.dsn: is for cdr.driver postgres"},
	} {
		_, err := Load(nil, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.env, err, tc.want)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: the error shows the password: %v", tc.env, err)
		}
	}
}

// TestNGKeys: the ng control socket is off by default and set like any key;
// a bad allow entry is an error naming it.
func TestNGKeys(t *testing.T) {
	c, err := Load(nil, nil)
	if err != nil || c.NG.Listen != "" {
		t.Fatalf("default ng.listen = %q, %v; want off", c.NG.Listen, err)
	}
	c, err = Load([]string{"--ng-listen", "127.0.0.1:22222", "--ng-allow", "127.0.0.1, ::1"}, nil)
	if err != nil || c.NG.Listen != "127.0.0.1:22222" || !reflect.DeepEqual(c.NG.Allow, []string{"127.0.0.1", "::1"}) {
		t.Fatalf("flags: %+v, %v", c.NG, err)
	}
	c, err = Load(nil, []string{"MEDIARELAY_NG_LISTEN=127.0.0.1:2223"})
	if err != nil || c.NG.Listen != "127.0.0.1:2223" {
		t.Fatalf("env: %+v, %v", c.NG, err)
	}
	if _, err := Load([]string{"--ng-allow", "proxy.example"}, nil); err == nil || !strings.Contains(err.Error(), "ng.allow[0]") {
		t.Fatalf("bad ng.allow: err = %v", err)
	}
	if _, err := Load([]string{"--ng-listen", "nope"}, nil); err == nil || !strings.Contains(err.Error(), "ng.listen") {
		t.Fatalf("bad ng.listen: err = %v", err)
	}
}

// TestTrunkE2EModeNormalized: media_mode e2e is accepted and its fallback
// defaults to refuse in the one place defaults live.
func TestTrunkE2EModeNormalized(t *testing.T) {
	tr := Trunk{Name: "a", Address: "sip:10.0.0.1", MediaMode: " E2E "}
	tr.normalize()
	if tr.MediaMode != "e2e" || tr.E2EFallback != "refuse" {
		t.Fatalf("normalized to media_mode %q, e2e_fallback %q", tr.MediaMode, tr.E2EFallback)
	}
	c := Default()
	c.Trunks = []Trunk{{Name: "a", Address: "sip:10.0.0.1", MediaMode: "e2e", E2EFallback: "terminate"}}
	c.Users = []User{{Name: "alice", Password: "x", MediaMode: "e2e"}}
	c.normalize()
	if err := c.Validate(); err != nil {
		t.Fatalf("e2e trunk and user rejected: %v", err)
	}
}

// TestEmptyRealmDefaulted: sip.realm set empty means DefaultRealm, filled
// in by Load so that the digest code takes the realm as it is.
func TestEmptyRealmDefaulted(t *testing.T) {
	c, err := LoadFile(writeFile(t, "sip:\n  realm: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.Realm != DefaultRealm {
		t.Errorf("realm = %q, want %q", c.SIP.Realm, DefaultRealm)
	}
}
