// Package tlsconf builds the TLS configurations of the relay's secure
// transports (SIP over TLS, HTTPS and WSS, and the relay's connections to
// TLS trunks) from the configured certificate files: TLS 1.2 or newer with
// AEAD suites only, client certificates verified against sip.tls_ca, and
// certificates reloaded without a restart.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// State holds the relay's certificates so that they can be replaced
// without a restart (Load, on SIGHUP): every new TLS connection
// picks up the current ones; established connections keep theirs.
type State struct {
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

// New loads the certificates c names.
func New(c config.Config, log *slog.Logger) (*State, error) {
	s := &State{sip: c.SIP, http: c.HTTP, log: log}
	if err := s.Load(); err != nil {
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

// Load reads every configured file; on any error nothing is replaced.
func (s *State) Load() error {
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

// Reload is Load for a running relay: new connections use the new
// certificates; a failure keeps the previous ones and is logged and
// returned.
func (s *State) Reload() error {
	if err := s.Load(); err != nil {
		s.log.Error("TLS reload failed; keeping the previous certificates", "err", err)
		return err
	}
	s.log.Info("TLS certificates reloaded")
	return nil
}

func (s *State) cert(which **tls.Certificate, key string) (*tls.Certificate, error) {
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

// ServerConfig is the SIP TLS listener's configuration.
func (s *State) ServerConfig() *tls.Config {
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

func (s *State) verifyClient(raw [][]byte) error {
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

// ClientConfig is what the relay dials trunks with: TLS 1.2 or newer, the
// server verified against sip.tls_ca (or the system roots) unless
// sip.tls_insecure_skip_verify, and a client certificate if configured.
func (s *State) ClientConfig() *tls.Config {
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

// HTTPConfig serves HTTPS/WSS with the reloadable certificate.
func (s *State) HTTPConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert(&s.httpCert, "http.tls_cert")
		},
	}
}
