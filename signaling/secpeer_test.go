package signaling

// Test peers for encrypted SIP legs: a throwaway PKI, a relay started with a
// caller's logger, and a sipgo UAS over TLS (or UDP) that answers SDES-SRTP
// and echoes media through pion/srtp.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/srtp/v3"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// testPKI is a CA that issues certificates for 127.0.0.1 into a temp dir.
type testPKI struct {
	dir    string
	caFile string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mediarelay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{dir: t.TempDir(), ca: ca, caKey: key, serial: 1}
	p.caFile = filepath.Join(p.dir, "ca.pem")
	writePEM(t, p.caFile, "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes name.pem and name.key, valid for 127.0.0.1 (server and
// client use), expired if asked; it returns the files.
func (p *testPKI) issue(t *testing.T, name string, expired bool) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.serial++
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(12*time.Hour)
	if expired {
		nb, na = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    nb,
		NotAfter:     na,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	cf, kf := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	writePEM(t, cf, "CERTIFICATE", der)
	writePEM(t, kf, "PRIVATE KEY", kder)
	return cf, kf
}

func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

// syncBuffer collects log output from many goroutines; with max set, only
// the first max bytes.
type syncBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max == 0 || len(s.b) < s.max {
		s.b = append(s.b, p...)
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// bufLogger logs at debug into a buffer (and to stderr with MEDIARELAY_TEST_LOG).
func bufLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	var w io.Writer = buf
	if os.Getenv("MEDIARELAY_TEST_LOG") != "" {
		w = io.MultiWriter(buf, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// startRelayWith is startRelay with the caller's logger (nil: the usual
// test logger) and a SIP TLS listener using the PKI (when given).
func startRelayWith(t *testing.T, pki *testPKI, log *slog.Logger, mod func(*config.Config)) *Relay {
	t.Helper()
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.UDPListen = "127.0.0.1:0"
	cfg.SIP.TCPListen = "127.0.0.1:0"
	cfg.Media.BindIP = "127.0.0.1"
	cfg.Media.WebRTCPort = 0
	cfg.Media.PortMin, cfg.Media.PortMax = nextPortRange()
	cfg.CDR.Path = filepath.Join(t.TempDir(), "cdr.db")
	cfg.SIP.InviteTimeout = 3 * time.Second
	// Tests that are not about caller authentication call trunks
	// anonymously; callauth_test.go turns this off.
	cfg.SIP.AnonymousCalls = true
	// and place calls faster than a source may in production (ratelimit_test.go).
	cfg.SIP.InviteRate, cfg.SIP.InviteBurst = 1000, 1000
	if pki != nil {
		cfg.SIP.TLSListen = "127.0.0.1:0"
		cfg.SIP.TLSCert, cfg.SIP.TLSKey = pki.issue(t, "relay", false)
		cfg.SIP.TLSCA = pki.caFile
	}
	if mod != nil {
		mod(&cfg)
	}
	if log == nil {
		log = testLogger(t)
	}
	r, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	select {
	case <-r.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("relay did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// metricsText fetches the relay's Prometheus page.
func metricsText(t *testing.T, r *Relay) string {
	t.Helper()
	res, err := http.Get("http://" + r.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// metricValue reads the first sample of the family name whose labels
// include every pair of label (`k="v",k2="v2"`, in any order); 0 if absent.
func metricValue(text, name, label string) float64 {
	want := map[string]string{}
	for _, m := range regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"`).FindAllStringSubmatch(label, -1) {
		want[m[1]] = m[2]
	}
	fams, err := parseMetrics(text)
	if err != nil || fams[name] == nil {
		return 0
	}
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, want) {
			return sampleValue(m)
		}
	}
	return 0
}

// secTrunk is a SIP peer over TLS or UDP that does SDES-SRTP with pion/srtp.
type secTrunk struct {
	dialogBook
	t         *testing.T
	addr      string // host:port of its SIP listener
	transport string
	ua        *sipgo.UserAgent
	srv       *sipgo.Server
	dua       *sipgo.DialogUA

	// behaviour, set before calls are placed
	suite        string // crypto suite to accept; "" takes the first offered
	plain        bool   // answer RTP/AVP without crypto
	cryptoAnyway bool   // answer with crypto even to a plain offer
	wrongKey     bool   // encrypt the echo with a key other than the answered one
	dtlsMode     bool   // answer UDP/TLS/RTP/SAVP and do DTLS-SRTP (setup:active)
	wrongFP      bool   // announce a fingerprint that is not its certificate's
	ownSSRC      uint32 // echo with this SSRC, as a real far end sends its own (0: the sender's)
	echo         bool

	mu       sync.Mutex
	conns    []*net.UDPConn
	answered chan struct{}
	byes     chan struct{}

	// media of the last call
	decOK, decFail atomic.Int64
	media          chan secMedia
	dtlsErr        atomic.Pointer[error]
	dtlsFP         atomic.Pointer[string] // its certificate's a=fingerprint (dtlsMode)
	answerCrypto   string                 // the a=crypto value it answered (holds its key)
}

// secMedia is one call's media socket and keys, for tests that send
// tampered or replayed packets.
type secMedia struct {
	conn  *net.UDPConn
	relay netip.AddrPort // where the relay's RTP comes from
	last  func() []byte  // the last SRTP packet echoed
}

func newSecTrunk(t *testing.T, transport string, serverTLS *tls.Config) *secTrunk {
	t.Helper()
	u := &secTrunk{t: t, transport: transport, echo: true, answered: make(chan struct{}, 10),
		byes: make(chan struct{}, 10), media: make(chan secMedia, 10)}
	u.ua, _ = sipgo.NewUA(sipgo.WithUserAgent("sectrunk"), sipgo.WithUserAgentHostname("127.0.0.1"))
	u.srv, _ = sipgo.NewServer(u.ua)
	cli, _ := sipgo.NewClient(u.ua, sipgo.WithClientHostname("127.0.0.1"))
	var closer io.Closer
	var serve func() // started once the handlers are in place
	switch transport {
	case "tls":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closer = l
		u.addr = l.Addr().String()
		serve = func() { _ = u.srv.ServeTLS(tls.NewListener(l, serverTLS)) }
	default:
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closer = pc
		u.addr = pc.LocalAddr().String()
		serve = func() { _ = u.srv.ServeUDP(pc) }
	}
	host, port := splitHostPort(u.addr)
	contact := sip.Uri{User: "trunk", Host: host, Port: port}
	if transport == "tls" {
		contact.UriParams = sip.HeaderParams{{K: "transport", V: "tls"}}
	}
	u.dua = &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: contact}}
	u.srv.OnInvite(u.onInvite)
	u.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if d := u.dialog(req); d != nil {
			_ = d.ReadAck(req, tx)
		}
	})
	u.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if d := u.dialog(req); d != nil {
			_ = d.ReadBye(req, tx)
		} else {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
		u.byes <- struct{}{}
	})
	go serve()
	t.Cleanup(func() {
		closer.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.ua.Close()
	})
	return u
}

// trunkConfig is the relay's trunk entry for u.
func (u *secTrunk) trunkConfig(policy, mode string, codecs ...string) config.Trunk {
	addr := "sip:" + u.addr
	if u.transport == "tls" {
		addr += ";transport=tls"
	}
	return config.Trunk{Name: "secure", Match: ".*", Address: addr, Transport: u.transport,
		Codecs: codecs, MediaMode: mode, SRTP: policy}
}

func (u *secTrunk) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	d, err := u.readInvite(u.dua, req, tx)
	if err != nil {
		return
	}
	_, offer, err := sdp.Parse(req.Body())
	if err != nil {
		_ = d.Respond(400, "Bad SDP", nil)
		return
	}
	var chosen []sdp.Codec
	for _, c := range offer.Codecs {
		if !c.Is("telephone-event") {
			chosen = append(chosen, c)
			break
		}
	}
	if ev, ok := offer.DTMF(8000); ok {
		chosen = append(chosen, ev)
	}
	ans := sdp.Offer{SessionID: 7, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Codecs: chosen}

	// Pick the relay's crypto line and answer with a fresh key of ours.
	var dec, enc *srtp.Context
	var dtlsOpts *media.DTLSOptions
	if u.dtlsMode {
		cert, _ := selfsign.GenerateSelfSigned()
		announced := cert
		if u.wrongFP {
			announced, _ = selfsign.GenerateSelfSigned()
		}
		fp, _ := media.Fingerprint(announced, "sha-256")
		own, _ := media.Fingerprint(cert, "sha-256")
		u.dtlsFP.Store(&own)
		ans.Proto = "UDP/TLS/RTP/SAVP"
		ans.Extra = []string{"fingerprint:" + fp, "setup:active"}
		if u.ownSSRC != 0 {
			ans.Extra = append(ans.Extra, fmt.Sprintf("ssrc:%d cname:sectrunk", u.ownSSRC))
		}
		var theirHash, theirFP string
		for _, a := range offer.Attrs {
			if a.Key == "fingerprint" {
				theirHash, theirFP, _ = sdp.ParseFingerprint(a.Value)
			}
		}
		dtlsOpts = &media.DTLSOptions{Certificate: cert, Client: true, FingerprintHash: theirHash, Fingerprint: theirFP,
			Remote: netip.AddrPortFrom(offer.Addr, uint16(offer.Port)), Timeout: 5 * time.Second}
	} else if !u.plain {
		var theirs sdp.Crypto
		found := false
		for _, line := range offer.Crypto {
			c, err := sdp.ParseCrypto(line)
			if err != nil {
				continue
			}
			if u.suite == "" || c.Suite == u.suite {
				theirs, found = c, true
				break
			}
		}
		if !found && u.cryptoAnyway {
			theirs, _ = sdp.GenerateCrypto(1, media.SuiteAESCM128SHA1_80)
			found = true
		}
		if !found {
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		mine, _ := sdp.GenerateCrypto(theirs.Tag, theirs.Suite)
		prof, _ := media.SRTPProfile(theirs.Suite)
		dec, err = srtpContext(prof, theirs.Keys[0].KeySalt)
		if err != nil {
			u.t.Errorf("their key: %v", err)
			return
		}
		encKey := mine.Keys[0].KeySalt
		if u.wrongKey {
			other, _ := sdp.GenerateCrypto(theirs.Tag, theirs.Suite)
			encKey = other.Keys[0].KeySalt
		}
		if enc, err = srtpContext(prof, encKey); err != nil {
			u.t.Errorf("our key: %v", err)
			return
		}
		ans.Crypto = []string{mine.String()}
		ans.Proto = offer.Proto
		u.mu.Lock()
		u.answerCrypto = mine.String()
		u.mu.Unlock()
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		_ = d.Respond(503, "No port", nil)
		return
	}
	ans.Port = conn.LocalAddr().(*net.UDPAddr).Port
	u.mu.Lock()
	u.conns = append(u.conns, conn)
	u.mu.Unlock()
	var lastMu sync.Mutex
	var last []byte
	reported := false
	echoLoop := func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !reported {
				reported = true
				u.media <- secMedia{conn: conn, relay: from, last: func() []byte {
					lastMu.Lock()
					defer lastMu.Unlock()
					return append([]byte(nil), last...)
				}}
			}
			pkt := buf[:n]
			if dec != nil && (n < 2 || buf[0] < 128 || buf[0] > 191 || media.IsRTCP(pkt)) {
				continue // a late DTLS record or SRTCP: not audio to echo
			}
			if dec != nil {
				plain, err := dec.DecryptRTP(nil, pkt, nil)
				if err != nil {
					u.decFail.Add(1)
					continue
				}
				u.decOK.Add(1)
				if u.ownSSRC != 0 && len(plain) >= 12 {
					binary.BigEndian.PutUint32(plain[8:], u.ownSSRC)
				}
				if pkt, err = enc.EncryptRTP(nil, plain, nil); err != nil {
					continue
				}
			}
			if u.echo {
				lastMu.Lock()
				last = append(last[:0], pkt...)
				lastMu.Unlock()
				_, _ = conn.WriteToUDPAddrPort(pkt, from)
			}
		}
	}
	if dtlsOpts == nil {
		go echoLoop()
	} else {
		go func() {
			keys, err := media.DTLSKeys(context.Background(), conn, *dtlsOpts)
			if err != nil {
				u.dtlsErr.Store(&err)
				return
			}
			dec, _ = srtpContextProfile(keys.Profile, keys.RemoteKey)
			enc, _ = srtpContextProfile(keys.Profile, keys.LocalKey)
			echoLoop()
		}()
	}
	go func() {
		<-d.Context().Done()
		conn.Close()
	}()
	if err := d.RespondSDP(ans.Marshal()); err != nil {
		return
	}
	u.answered <- struct{}{}
}

func srtpContextProfile(p srtp.ProtectionProfile, keySalt []byte) (*srtp.Context, error) {
	return srtpContext(p, keySalt)
}

func srtpContext(p srtp.ProtectionProfile, keySalt []byte) (*srtp.Context, error) {
	kl, _ := p.KeyLen()
	return srtp.CreateContext(keySalt[:kl], keySalt[kl:], p)
}

// echoFrames sends frames from the phone and checks they come back intact.
func echoFrames(t *testing.T, p *phone, n int) {
	t.Helper()
	sent := p.sendFrames(n, 160)
	got := p.collect(time.Second)
	want := map[string]bool{}
	for _, s := range sent {
		want[string(s)] = true
	}
	for _, pkt := range got {
		if !want[string(pkt.Payload)] {
			t.Fatalf("a packet came back that was never sent: %q", pkt.Payload[:min(12, len(pkt.Payload))])
		}
	}
	if len(got) < n*9/10 {
		t.Fatalf("only %d of %d frames came back", len(got), n)
	}
}

// countBack sends frames and returns how many packets come back (any content:
// transcoded audio does not come back byte for byte).
func countBack(t *testing.T, p *phone, n int) int {
	t.Helper()
	p.sendFrames(n, 160)
	return len(p.collect(time.Second))
}

// waitChan waits for a signal on ch; the deadline only keeps a broken test
// from hanging.
func waitChan(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// callStatus places a call and returns the final status without failing.
func callStatus(t *testing.T, p *phone, r *Relay, user string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.invite(ctx, r, user, []byte(p.offer()))
	if res == nil {
		t.Fatalf("invite: %v", err)
	}
	return int(res.StatusCode)
}
