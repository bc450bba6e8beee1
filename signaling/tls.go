package signaling

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// tlsState holds the relay's certificates so that they can be replaced
// without a restart (Relay.ReloadTLS, on SIGHUP): every new TLS connection
// picks up the current ones; established connections keep theirs.
type tlsState struct {
	sip  config.SIP
	http config.HTTP
	log  *slog.Logger

	mu         sync.RWMutex
	sipCert    *tls.Certificate // served on sip.tls_listen
	httpCert   *tls.Certificate // served on http.listen (HTTPS/WSS)
	clientCert *tls.Certificate // presented to trunks asking for one
	clientCAs  *x509.CertPool   // verifies clients when required

	// roots verifies trunks' servers. It is read once: sipgo clones one
	// dial configuration per connection, so a new CA bundle takes a
	// restart (certificates and keys reload).
	roots *x509.CertPool
}

func newTLSState(c config.Config, log *slog.Logger) (*tlsState, error) {
	s := &tlsState{sip: c.SIP, http: c.HTTP, log: log}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.roots = s.clientCAs // nil: the system roots
	return s, nil
}

func loadPair(key, certFile, keyFile string) (*tls.Certificate, error) {
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if cert.Leaf != nil {
		if now := time.Now(); now.After(cert.Leaf.NotAfter) {
			return nil, fmt.Errorf("%s: certificate expired on %s", key, cert.Leaf.NotAfter.UTC().Format("2006-01-02 15:04:05Z"))
		}
	}
	return &cert, nil
}

// load reads every configured file; on any error nothing is replaced.
func (s *tlsState) load() error {
	sipCert, err := loadPair("sip.tls_cert", s.sip.TLSCert, s.sip.TLSKey)
	if err != nil {
		return err
	}
	httpCert, err := loadPair("http.tls_cert", s.http.TLSCert, s.http.TLSKey)
	if err != nil {
		return err
	}
	clientCert, err := loadPair("sip.tls_client_cert", s.sip.TLSClientCert, s.sip.TLSClientKey)
	if err != nil {
		return err
	}
	var pool *x509.CertPool
	if s.sip.TLSCA != "" {
		pem, err := os.ReadFile(s.sip.TLSCA)
		if err != nil {
			return fmt.Errorf("sip.tls_ca: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("sip.tls_ca: %s holds no PEM certificate", s.sip.TLSCA)
		}
	}
	s.mu.Lock()
	s.sipCert, s.httpCert, s.clientCert, s.clientCAs = sipCert, httpCert, clientCert, pool
	s.mu.Unlock()
	return nil
}

// ReloadTLS re-reads the SIP and HTTP certificates, keys and the client CA
// bundle. New connections use them; a failure keeps the previous ones and
// is returned (and logged). The command calls it on SIGHUP.
func (r *Relay) ReloadTLS() error {
	if r.tls == nil {
		return errors.New("relay not started")
	}
	if err := r.tls.load(); err != nil {
		r.log.Error("TLS reload failed; keeping the previous certificates", "err", err)
		return err
	}
	r.log.Info("TLS certificates reloaded")
	return nil
}

func (s *tlsState) cert(which **tls.Certificate, key string) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if *which == nil {
		return nil, fmt.Errorf("no %s configured", key)
	}
	return *which, nil
}

// tls12Suites are the only TLS 1.2 cipher suites the relay offers or
// accepts: ECDHE key exchange with AEAD ciphers (no CBC, no SHA-1 MACs, no
// static RSA). TLS 1.3's suites are fixed by crypto/tls and all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// serverConfig is the SIP TLS listener's configuration.
func (s *tlsState) serverConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert(&s.sipCert, "sip.tls_cert")
		},
	}
	if s.sip.TLSRequireClientCert {
		// Verified here rather than by crypto/tls so that the CA bundle
		// reloads and a refusal gets a clear log line.
		c.ClientAuth = tls.RequireAnyClientCert
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			err := s.verifyClient(raw)
			if err != nil {
				s.log.Error("SIP TLS client refused: certificate not trusted", "err", err)
			}
			return err
		}
	}
	return c
}

func (s *tlsState) verifyClient(raw [][]byte) error {
	if len(raw) == 0 {
		return errors.New("no client certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		certs[i] = c
	}
	s.mu.RLock()
	pool := s.clientCAs
	s.mu.RUnlock()
	opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(opts)
	return err
}

// clientConfig is what the relay dials trunks with: TLS 1.2 or newer, the
// server verified against sip.tls_ca (or the system roots) unless
// sip.tls_insecure_skip_verify, and a client certificate if configured.
func (s *tlsState) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		CipherSuites:       tls12Suites,
		RootCAs:            s.roots,
		InsecureSkipVerify: s.sip.TLSInsecureSkipVerify,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s.mu.RLock()
			defer s.mu.RUnlock()
			if s.clientCert == nil {
				return &tls.Certificate{}, nil // no certificate to offer
			}
			return s.clientCert, nil
		},
	}
}

// httpConfig serves HTTPS/WSS with the reloadable certificate.
func (s *tlsState) httpConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert(&s.httpCert, "http.tls_cert")
		},
	}
}

// listenSIPTLS opens sip.tls_listen and returns the function that serves it.
func (r *Relay) listenSIPTLS(addr string) (func() error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sip.tls_listen %s: %w", addr, err)
	}
	r.closers = append(r.closers, l.Close)
	r.tlsAddr = l.Addr()
	tl := r.sipStream(tls.NewListener(r.guard(l, "tls", r.cfg.SIP.MaxConns, r.cfg.SIP.MaxConnsPerSource), r.tls.serverConfig()))
	return func() error { return r.server.ServeTLS(tl) }, nil
}

// newTrunkTLSUA is the dialog UA for trunks reached over TLS: its Contact
// names the TLS listener so that in-dialog requests come back encrypted.
func (r *Relay) newTrunkTLSUA() *sipgo.DialogUA {
	port := 0
	if r.tlsAddr != nil {
		_, port = splitHostPort(r.tlsAddr.String())
	}
	return &sipgo.DialogUA{
		Client: r.client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "mediarelay", Host: r.host, Port: port,
			UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}},
	}
}

// dialogUAFor picks the dialog UA for a trunk's transport.
func (r *Relay) dialogUAFor(t *Trunk) *sipgo.DialogUA {
	if secureSignalling(t) && r.trunkTLSUA != nil {
		return r.trunkTLSUA
	}
	return r.trunkUA
}

// logTrunkError logs why a trunk could not be reached, saying so plainly
// when its TLS certificate was the reason.
func logTrunkError(log *slog.Logger, t *Trunk, err error) {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
	)
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		log.Error("trunk TLS connection refused: certificate expired or not yet valid", "trunk", t.Name, "address", t.Address, "err", err)
	case errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &hostname), errors.As(err, &verify):
		log.Error("trunk TLS connection refused: certificate not trusted", "trunk", t.Name, "address", t.Address, "err", err)
	case errors.As(err, &alert):
		log.Error("trunk TLS connection refused by the trunk", "trunk", t.Name, "address", t.Address, "alert", alert.Error(), "err", err)
	default:
		log.Warn("trunk unreachable", "err", err)
	}
}
