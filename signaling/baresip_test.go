package signaling

// A real SIP peer on the trunk side: baresip (Debian package `baresip`,
// installed by .ci/deps) answering over SIP TLS with SDES-SRTP (RTP/SAVP,
// a=crypto), playing tones from a WAV file and recording what it hears.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
	"github.com/mediarelay/mediarelay/transcode/tone"
)

// baresipUA is one baresip process with its own config directory.
type baresipUA struct {
	dir     string
	tlsPort int // sip_listen's port + 1: baresip puts TLS there
	log     *syncBuffer
	recDir  string // the sndfile module's dumps: what it sent and heard
	exited  chan struct{}
}

// freePortPair finds p with UDP p, TCP p and TCP p+1 free on 127.0.0.1.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err2 := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		u, err3 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err2 == nil {
			l2.Close()
		}
		if err3 == nil {
			u.Close()
		}
		if err2 == nil && err3 == nil && p+1 < 65536 {
			return p
		}
	}
	t.Fatal("no free port pair on 127.0.0.1")
	return 0
}

// startBaresip runs baresip as an auto-answering UAS for user over TLS on
// loopback, with SDES-SRTP mandatory and PCMU only. It plays source (an
// 8 kHz mono WAV) into every call. The process is killed when the test ends.
func startBaresip(t *testing.T, pki *testPKI, user, source string) *baresipUA {
	t.Helper()
	return startBaresipEnc(t, pki, user, source, "srtp-mand")
}

// startBaresipEnc is startBaresip with the account's media encryption:
// srtp-mand (SDES) or dtls_srtp (DTLS-SRTP, RTCP multiplexed).
func startBaresipEnc(t *testing.T, pki *testPKI, user, source, mediaenc string) *baresipUA {
	t.Helper()
	encModule, rtcpMux := "srtp.so", "no"
	if mediaenc == "dtls_srtp" {
		encModule, rtcpMux = "dtls_srtp.so", "yes"
	}
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Fatal("baresip is not installed (Debian package baresip; .ci/deps installs it)")
	}
	b := &baresipUA{dir: t.TempDir(), log: &syncBuffer{}, exited: make(chan struct{})}
	b.recDir = filepath.Join(b.dir, "rec")
	if err := os.Mkdir(b.recDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// sip_certificate is the certificate and its key in one PEM file.
	cf, kf := pki.issue(t, "baresip", false)
	certPEM, _ := os.ReadFile(cf)
	keyPEM, _ := os.ReadFile(kf)
	certFile := filepath.Join(b.dir, "cert.pem")
	if err := os.WriteFile(certFile, append(certPEM, keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its accounts: no registration, answer at once, SDES mandatory.
	acct := fmt.Sprintf("<sip:%s@127.0.0.1;transport=tls>;regint=0;answermode=auto;mediaenc=%s;audio_codecs=PCMU\n", user, mediaenc)
	if err := os.WriteFile(filepath.Join(b.dir, "accounts"), []byte(acct), 0o600); err != nil {
		t.Fatal(err)
	}

	for attempt := 0; ; attempt++ {
		port := freePortPair(t)
		b.tlsPort = port + 1
		// Modules are listed one by one: no stdio/cons UI (CI has no TTY
		// and no stdin), no sound card, no STUN/ICE. aufile is the source;
		// baresip 1.0's aufile has no player, so the sndfile filter records
		// what is decoded (…-dec.wav) and the player is an unconnected
		// aubridge device. dns_server keeps any lookup on loopback.
		// baresip 1.0 binds its RTP sockets to the wildcard address (its
		// stream code ignores sip_listen and net_interface there; it still
		// announces and sends from 127.0.0.1): rtp_ports keeps them below
		// the test relays' ranges (30000 up) and Linux's ephemeral ports.
		conf := strings.Join([]string{
			"poll_method epoll",
			fmt.Sprintf("sip_listen 127.0.0.1:%d", port),
			"sip_certificate " + certFile,
			"sip_cafile " + pki.caFile,
			"call_local_timeout 60",
			"call_max_calls 4",
			"audio_path " + b.dir,
			"audio_source aufile," + source,
			"audio_player aubridge,mediarelay-test",
			"audio_alert aubridge,mediarelay-test",
			"ausrc_srate 8000",
			"auplay_srate 8000",
			"ausrc_channels 1",
			"auplay_channels 1",
			"audio_level no",
			"rtcp_mux " + rtcpMux,
			"rtp_ports 20000-29999",
			"jitter_buffer_delay 1-10",
			"rtp_timeout 0",
			"net_interface 127.0.0.1",
			"dns_server 127.0.0.1:53",
			"snd_path " + b.recDir,
			"module_path /usr/lib/baresip/modules",
			"module g711.so",
			"module sndfile.so",
			"module aufile.so",
			"module aubridge.so",
			"module " + encModule,
			"module_tmp account.so",
			"module_app menu.so",
			"statmode_default off",
			"",
		}, "\n")
		if err := os.WriteFile(filepath.Join(b.dir, "config"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		// -4: IPv4 only; -s: SIP trace (the tests read the INVITE from it);
		// -t: a backstop should this test binary die without cleaning up.
		cmd := exec.Command("baresip", "-4", "-s", "-v", "-f", b.dir, "-t", "180")
		cmd.Stdin = nil // /dev/null
		cmd.Stdout, cmd.Stderr = b.log, b.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		ready := false
		deadline := time.Now().Add(10 * time.Second)
		for !ready && time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{}
			case <-time.After(20 * time.Millisecond):
				ready = strings.Contains(b.log.String(), "baresip is ready")
			}
		}
		if ready {
			pid := cmd.Process.Pid
			b.exited = exited
			t.Cleanup(func() {
				// Only the process this test started, by its PID.
				_ = cmd.Process.Kill()
				<-exited
				if t.Failed() {
					t.Logf("baresip (pid %d) output:\n%s", pid, b.log.String())
				}
			})
			return b
		}
		_ = cmd.Process.Kill()
		<-exited
		if attempt == 2 || !strings.Contains(b.log.String(), "in use") {
			t.Fatalf("baresip did not start:\n%s", b.log.String())
		}
		b.log = &syncBuffer{}
	}
}

// trunk is the relay's trunk entry for b.
func (b *baresipUA) trunk(mode string) config.Trunk {
	return config.Trunk{Name: "baresip", Match: ".*", Address: fmt.Sprintf("sip:127.0.0.1:%d;transport=tls", b.tlsPort),
		Transport: "tls", Codecs: []string{"PCMU"}, MediaMode: mode, SRTP: mediaplan.SRTPRequired}
}

// recording reads the WAV sndfile wrote of what baresip decoded; ok is
// false until the file is complete (sndfile finishes it when the call is
// destroyed).
func (b *baresipUA) recording(t *testing.T) ([]int16, int, bool) {
	files, _ := filepath.Glob(filepath.Join(b.recDir, "*dec.wav"))
	if len(files) != 1 {
		return nil, 0, false
	}
	f, err := os.Open(files[0])
	if err != nil {
		return nil, 0, false
	}
	defer f.Close()
	pcm, rate, err := tone.ReadWAV(f)
	if err != nil || len(pcm) == 0 {
		return nil, 0, false
	}
	return pcm, rate, true
}

// sendPCMUTone sends pcm (8 kHz) from the phone as 20 ms PCMU packets in
// real time.
func (p *phone) sendPCMUTone(t *testing.T, pcm []int16) {
	payload := make([]byte, 160)
	for i := 0; i+160 <= len(pcm); i += 160 {
		transcode.MulawEncode(payload, pcm[i:i+160])
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(2000 + i/160), Timestamp: uint32(9000 + i), SSRC: 4321},
			Payload: append([]byte(nil), payload...)}
		if err := p.track.WriteRTP(pkt); err != nil {
			t.Errorf("send: %v", err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collectFor gathers what the phone receives for d.
func (p *phone) collectFor(d time.Duration) []*rtp.Packet {
	var got []*rtp.Packet
	end := time.After(d)
	for {
		select {
		case pkt := <-p.received:
			got = append(got, pkt)
		case <-end:
			return got
		}
	}
}

// TestBaresipSDESOverTLS calls baresip through the relay: SIP over TLS,
// RTP/SAVP with a=crypto (SDES). The phone must hear baresip's 400 Hz +
// 1 kHz, and baresip must hear the phone's tones; hanging up ends both legs.
func TestBaresipSDESOverTLS(t *testing.T) {
	const seconds = 4
	for _, tc := range []struct {
		name, codec, mode string
	}{
		{"PCMU-passthrough", "PCMU", mediaplan.ModePassthrough},
		{"Opus-transcode", "opus", mediaplan.ModeAuto},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := newPKI(t)
			source := filepath.Join(t.TempDir(), "tones.wav")
			f, err := os.Create(source)
			if err != nil {
				t.Fatal(err)
			}
			// Long enough that the file never runs out during the call.
			if err := tone.WriteWAV(f, tone.Generate([]float64{400, 1000}, 8000, 8000*60, 0.25), 8000); err != nil {
				t.Fatal(err)
			}
			f.Close()
			b := startBaresip(t, pki, "1000", source)
			r := startRelayWith(t, pki, nil, func(c *config.Config) {
				c.Trunks = []config.Trunk{b.trunk(tc.mode)}
			})
			p := newPhone(t, tc.codec)
			p.call(r, "1000")

			// Talk and listen at once, as people do.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if tc.codec == "PCMU" {
					p.sendPCMUTone(t, tone.Generate([]float64{400, 1000}, 8000, 8000*seconds, 0.25))
				} else {
					p.sendOpusTone(t, tone.Generate([]float64{400, 1000}, 48000, 48000*seconds, 0.25))
				}
			}()
			heard := p.collectFor(seconds * time.Second)
			wg.Wait()
			p.hangup()

			// The phone heard baresip's tones.
			var pcm []int16
			rate := 8000
			if tc.codec == "PCMU" {
				for _, pkt := range heard {
					if pkt.PayloadType != 0 {
						continue
					}
					s := make([]int16, len(pkt.Payload))
					transcode.MulawDecode(s, pkt.Payload)
					pcm = append(pcm, s...)
				}
			} else {
				pcm, rate = decodeOpus(t, heard), 48000
			}
			if len(pcm) < rate*2 {
				t.Errorf("the phone heard %d samples from baresip (%d packets)", len(pcm), len(heard))
			} else {
				pcm = pcm[rate/2:] // skip set-up
				for _, freq := range []float64{400, 1000} {
					if !tone.Detect(pcm, rate, freq) {
						t.Errorf("%v Hz from baresip not heard at the phone", freq)
					}
				}
			}

			// The call ended on both legs: baresip got the BYE, the relay
			// freed the call and wrote its CDR.
			waitFor(t, "baresip to end the call", 5*time.Second, func() bool {
				return regexp.MustCompile(`Call with \S+ terminated`).MatchString(b.log.String())
			})
			waitFor(t, "relay cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
			if cause, code := lastEnd(t, r, 1); cause == "" || code >= 300 {
				t.Errorf("CDR end cause %q, SIP code %d", cause, code)
			}

			// Baresip heard the phone's tones.
			var rec []int16
			var recRate int
			waitFor(t, "baresip's recording", 5*time.Second, func() bool {
				var ok bool
				rec, recRate, ok = b.recording(t)
				return ok
			})
			if len(rec) < recRate*2 {
				t.Errorf("baresip recorded %d samples", len(rec))
			} else {
				rec = rec[recRate/2:]
				for _, freq := range []float64{400, 1000} {
					if !tone.Detect(rec, recRate, freq) {
						t.Errorf("%v Hz from the phone not heard by baresip", freq)
					}
				}
			}

			// The INVITE baresip received came over TLS with SDES.
			logText := b.log.String()
			inv := regexp.MustCompile(`(?s)TLS 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:` + fmt.Sprint(b.tlsPort) + `\s*\nINVITE sip:1000@.*?\r?\n\r?\n.*?m=audio \d+ (\S+) .*?(a=crypto:[^\r\n]*)`).FindStringSubmatch(logText)
			if inv == nil {
				t.Fatalf("no INVITE over TLS with a=crypto in baresip's SIP trace")
			}
			if inv[1] != "RTP/SAVP" {
				t.Errorf("INVITE offered %s, want RTP/SAVP", inv[1])
			}
			if !regexp.MustCompile(`SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_80\)`).MatchString(logText) ||
				!strings.Contains(logText, "mediaenc event 'Secure'") {
				t.Errorf("baresip did not report SRTP in use")
			}
			t.Logf("phone heard %d packets from baresip; baresip recorded %.1f s", len(heard), float64(len(rec))/float64(max(recRate, 1)))
		})
	}
}
