package signaling

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

func tlsServerConfig(t *testing.T, pki *testPKI, name string, expired bool) *tls.Config {
	t.Helper()
	cf, kf := pki.issue(t, name, expired)
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// TestSDESOverTLS: SIP over TLS to the trunk, RTP/SAVP with every crypto
// suite, audio echoed through the trunk's pion/srtp and back intact.
func TestSDESOverTLS(t *testing.T) {
	for _, suite := range []string{media.SuiteAESCM128SHA1_80, media.SuiteAESCM128SHA1_32, media.SuiteAEADAES128GCM, media.SuiteAEADAES256GCM} {
		t.Run(suite, func(t *testing.T) {
			pki := newPKI(t)
			u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
			u.suite = suite
			r := startRelayWith(t, pki, nil, func(c *config.Config) {
				c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModePassthrough, "PCMU")}
			})
			p := newPhone(t, "PCMU")
			p.call(r, "1000")
			inv := u.lastInvite()
			if tp := strings.ToUpper(inv.Transport()); tp != "TLS" {
				t.Fatalf("INVITE came over %s", tp)
			}
			_, offer, err := sdp.Parse(inv.Body())
			if err != nil {
				t.Fatal(err)
			}
			if offer.Proto != "RTP/SAVP" || len(offer.Crypto) != 4 {
				t.Fatalf("offer proto %s with %d crypto lines", offer.Proto, len(offer.Crypto))
			}
			echoFrames(t, p, 60)
			if u.decOK.Load() < 50 || u.decFail.Load() != 0 {
				t.Fatalf("trunk decrypted %d packets, %d failed", u.decOK.Load(), u.decFail.Load())
			}
			p.hangup()
			waitChan(t, "BYE at the trunk", u.byes)
			waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
}

// TestSDESTranscode: Opus in the browser, PCMU over SDES-SRTP to the trunk.
func TestSDESTranscode(t *testing.T) {
	pki := newPKI(t)
	u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
	r := startRelayWith(t, pki, nil, func(c *config.Config) {
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModeTranscode, "PCMU")}
	})
	p := newPhone(t, "opus")
	p.call(r, "1000")
	if n := countBack(t, p, 60); n < 40 {
		t.Fatalf("only %d packets came back through the transcoder", n)
	}
	if u.decOK.Load() < 40 || u.decFail.Load() != 0 {
		t.Fatalf("trunk decrypted %d packets, %d failed", u.decOK.Load(), u.decFail.Load())
	}
	p.hangup()
	waitChan(t, "BYE at the trunk", u.byes)
}

// TestSDESOptional: optional offers RTP/AVP with crypto; a plain answer
// gives a plain call, an encrypted one an encrypted call.
func TestSDESOptional(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "encrypted"
		if plain {
			name = "plain"
		}
		t.Run(name, func(t *testing.T) {
			pki := newPKI(t)
			u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
			u.plain = plain
			r := startRelayWith(t, pki, nil, func(c *config.Config) {
				c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPOptional, mediaplan.ModeAuto, "PCMU")}
			})
			p := newPhone(t, "PCMU")
			p.call(r, "1000")
			_, offer, _ := sdp.Parse(u.lastInvite().Body())
			if offer.Proto != "RTP/AVP" || len(offer.Crypto) == 0 {
				t.Fatalf("optional offer: proto %s, %d crypto lines", offer.Proto, len(offer.Crypto))
			}
			echoFrames(t, p, 40)
			if !plain && u.decOK.Load() < 30 {
				t.Fatalf("trunk decrypted only %d packets", u.decOK.Load())
			}
			p.hangup()
			waitChan(t, "BYE at the trunk", u.byes)
		})
	}
}

// TestSDESRequiredRefused: a trunk that answers in the clear to a required
// offer gets a BYE; the browser gets 488 and the CDR says why.
func TestSDESRequiredRefused(t *testing.T) {
	pki := newPKI(t)
	u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
	u.plain = true
	r := startRelayWith(t, pki, nil, func(c *config.Config) {
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModeAuto, "PCMU")}
	})
	p := newPhone(t, "PCMU")
	if code := callStatus(t, p, r, "1000"); code != 488 {
		t.Fatalf("browser got %d, want 488", code)
	}
	waitChan(t, "BYE at the trunk", u.byes)
	waitFor(t, "cause srtp_required", 5*time.Second, func() bool {
		return metricValue(metricsText(t, r), "mediarelay_calls_total", `cause="srtp_required"`) == 1
	})
}

// TestSDESOverUDPRefused: with the default policy (no
// allow_sdes_over_insecure_transport) no key is sent over UDP, and the
// configuration is refused at start; a crypto answer to a plain offer over
// UDP is refused too. With the loud option set, UDP works.
func TestSDESOverUDPRefused(t *testing.T) {
	t.Run("config", func(t *testing.T) {
		c := config.Default()
		c.Trunks = []config.Trunk{{Name: "u", Address: "sip:127.0.0.1:5070", Transport: "udp", SRTP: mediaplan.SRTPRequired}}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "trunks[0].srtp") {
			t.Fatalf("Validate: %v", err)
		}
	})
	t.Run("offer", func(t *testing.T) {
		u := newSecTrunk(t, "udp", nil)
		r := startRelayWith(t, nil, nil, func(c *config.Config) {
			c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModeAuto, "PCMU")}
		})
		p := newPhone(t, "PCMU")
		if code := callStatus(t, p, r, "1000"); code != 488 {
			t.Fatalf("browser got %d, want 488", code)
		}
		if u.lastInvite() != nil {
			t.Fatal("an INVITE (with keys) reached the trunk over UDP")
		}
	})
	t.Run("answer", func(t *testing.T) {
		u := newSecTrunk(t, "udp", nil)
		u.cryptoAnyway = true
		r := startRelayWith(t, nil, nil, func(c *config.Config) {
			c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPOff, mediaplan.ModeAuto, "PCMU")}
		})
		p := newPhone(t, "PCMU")
		if code := callStatus(t, p, r, "1000"); code != 488 {
			t.Fatalf("browser got %d, want 488", code)
		}
		waitChan(t, "BYE at the trunk", u.byes)
	})
	t.Run("allowed", func(t *testing.T) {
		u := newSecTrunk(t, "udp", nil)
		r := startRelayWith(t, nil, nil, func(c *config.Config) {
			tr := u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModeAuto, "PCMU")
			tr.AllowSDESOverInsecureTransport = true
			c.Trunks = []config.Trunk{tr}
		})
		p := newPhone(t, "PCMU")
		p.call(r, "1000")
		echoFrames(t, p, 30)
		if u.decOK.Load() < 20 {
			t.Fatalf("trunk decrypted only %d packets", u.decOK.Load())
		}
		p.hangup()
	})
}

// TestSRTPTamperedAndReplayed: tampered and replayed SRTP from the trunk's
// address is dropped and counted per reason; only authentic audio reaches
// the browser.
func TestSRTPTamperedAndReplayed(t *testing.T) {
	pki := newPKI(t)
	u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
	r := startRelayWith(t, pki, nil, func(c *config.Config) {
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModePassthrough, "PCMU")}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	go p.sendFrames(20, 160)
	var m secMedia
	select {
	case m = <-u.media:
	case <-time.After(5 * time.Second):
		t.Fatal("no media at the trunk")
	}
	time.Sleep(300 * time.Millisecond)
	last := m.last()
	if len(last) < 20 {
		t.Fatal("nothing echoed yet")
	}
	const n = 10
	for i := 0; i < n; i++ {
		bad := append([]byte(nil), last...)
		// A sequence number not seen yet (else it is a replay) and a
		// flipped payload byte: the tag no longer matches.
		seq := uint16(bad[2])<<8 | uint16(bad[3]) + 1000 + uint16(i)
		bad[2], bad[3] = byte(seq>>8), byte(seq)
		bad[14+i] ^= 0x55
		_, _ = m.conn.WriteToUDPAddrPort(bad, m.relay)
		_, _ = m.conn.WriteToUDPAddrPort(last, m.relay) // a replay
	}
	got := p.collect(time.Second)
	for _, pkt := range got {
		if !bytes.HasPrefix(pkt.Payload, []byte("frame-")) {
			t.Fatalf("a tampered packet reached the browser: %q", pkt.Payload[:12])
		}
	}
	text := metricsText(t, r)
	if v := metricValue(text, "mediarelay_packets_dropped_total", `reason="srtp_auth"`); v < n {
		t.Fatalf("srtp_auth drops = %v, want >= %d\n%s", v, n, text)
	}
	if v := metricValue(text, "mediarelay_packets_dropped_total", `reason="srtp_replay"`); v < n {
		t.Fatalf("srtp_replay drops = %v, want >= %d", v, n)
	}
	p.hangup()
}

// TestSRTPAuthFailureEndsCall: a trunk whose SRTP never authenticates (wrong
// key) is hung up with cause srtp_auth_failed.
func TestSRTPAuthFailureEndsCall(t *testing.T) {
	pki := newPKI(t)
	u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
	u.wrongKey = true
	r := startRelayWith(t, pki, nil, func(c *config.Config) {
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModePassthrough, "PCMU")}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	go p.sendFrames(300, 160) // keeps the trunk echoing (undecryptably)
	waitChan(t, "BYE at the trunk", u.byes)
	waitFor(t, "cause srtp_auth_failed", 5*time.Second, func() bool {
		return metricValue(metricsText(t, r), "mediarelay_calls_total", `cause="srtp_auth_failed"`) == 1
	})
	if got := p.collect(300 * time.Millisecond); len(got) != 0 {
		t.Fatalf("%d unauthenticated packets reached the browser", len(got))
	}
}

// TestTLSCertificateRefused: a trunk with an expired or untrusted
// certificate is not called; the log says why.
func TestTLSCertificateRefused(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"expired", "certificate expired"},
		{"untrusted", "certificate not trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := newPKI(t)
			var srv *tls.Config
			if tc.name == "expired" {
				srv = tlsServerConfig(t, pki, "trunk", true)
			} else {
				srv = tlsServerConfig(t, newPKI(t), "trunk", false)
			}
			u := newSecTrunk(t, "tls", srv)
			log, buf := bufLogger()
			r := startRelayWith(t, pki, log, func(c *config.Config) {
				c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModeAuto, "PCMU")}
			})
			p := newPhone(t, "PCMU")
			if code := callStatus(t, p, r, "1000"); code != 503 {
				t.Fatalf("browser got %d, want 503", code)
			}
			if u.lastInvite() != nil {
				t.Fatal("the trunk got an INVITE")
			}
			if !strings.Contains(buf.String(), "trunk TLS connection refused: "+tc.want) {
				t.Fatalf("no clear log line; log:\n%s", buf.String())
			}
		})
	}
}

// TestTLSMutual: the trunk demands a client certificate; the relay presents
// sip.tls_client_cert.
func TestTLSMutual(t *testing.T) {
	pki := newPKI(t)
	srv := tlsServerConfig(t, pki, "trunk", false)
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = pki.pool()
	u := newSecTrunk(t, "tls", srv)
	r := startRelayWith(t, pki, nil, func(c *config.Config) {
		c.SIP.TLSClientCert, c.SIP.TLSClientKey = pki.issue(t, "relay-client", false)
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModePassthrough, "PCMU")}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	echoFrames(t, p, 20)
	p.hangup()
}

// TestReloadTLS: new certificate files are served after ReloadTLS; a broken
// one is refused and the old certificate kept.
func TestReloadTLS(t *testing.T) {
	pki := newPKI(t)
	var certFile, keyFile string
	r := startRelayWith(t, pki, nil, func(c *config.Config) { certFile, keyFile = c.SIP.TLSCert, c.SIP.TLSKey })
	serial := func() string {
		conn, err := tls.Dial("tcp", r.SIPTLSAddr().String(), &tls.Config{RootCAs: pki.pool(), ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	cf, kf := pki.issue(t, "relay2", false)
	mustCopy(t, cf, certFile)
	mustCopy(t, kf, keyFile)
	if err := r.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	after := serial()
	if after == before {
		t.Fatal("still the old certificate after ReloadTLS")
	}
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.ReloadTLS(); err == nil {
		t.Fatal("a broken certificate file was accepted")
	}
	if serial() != after {
		t.Fatal("a failed reload replaced the certificate")
	}
}

func mustCopy(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNoKeysInLogs: an SDES call logged at debug, sipgo's loggers included
// (and the process default logger, which sipgo falls back to), contains no
// key, in base64 or raw, and no a=crypto line.
func TestNoKeysInLogs(t *testing.T) {
	log, buf := bufLogger()
	old := slog.Default()
	slog.SetDefault(log)
	t.Cleanup(func() { slog.SetDefault(old) })
	if sip.SIPDebug {
		t.Fatal("sipgo's SIPDebug (whole messages to the default logger) is on")
	}

	pki := newPKI(t)
	u := newSecTrunk(t, "tls", tlsServerConfig(t, pki, "trunk", false))
	r := startRelayWith(t, pki, log, func(c *config.Config) {
		c.Trunks = []config.Trunk{u.trunkConfig(mediaplan.SRTPRequired, mediaplan.ModePassthrough, "PCMU")}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	echoFrames(t, p, 20)
	p.hangup()
	waitChan(t, "BYE at the trunk", u.byes)
	waitFor(t, "call end", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })

	_, offer, _ := sdp.Parse(u.lastInvite().Body())
	u.mu.Lock()
	lines := append(append([]string(nil), offer.Crypto...), u.answerCrypto)
	u.mu.Unlock()
	logs := buf.String()
	if !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "sip leg encrypted") {
		t.Fatalf("expected debug logs of an encrypted call; got:\n%s", logs)
	}
	if strings.Contains(logs, "inline:") && !strings.Contains(logs, "inline:<redacted>") {
		t.Fatal("an inline key in the logs")
	}
	if strings.Contains(strings.ToLower(logs), "a=crypto:") && !strings.Contains(logs, "crypto:<redacted>") {
		t.Fatal("an a=crypto line in the logs")
	}
	for _, l := range lines {
		c, err := sdp.ParseCrypto(l)
		if err != nil {
			t.Fatal(err)
		}
		k := c.Keys[0].KeySalt
		for _, form := range []string{base64.StdEncoding.EncodeToString(k), base64.RawStdEncoding.EncodeToString(k), string(k), hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k[:16])} {
			if strings.Contains(logs, form) {
				t.Fatalf("key material of %s in the logs", c.Suite)
			}
		}
	}
}
