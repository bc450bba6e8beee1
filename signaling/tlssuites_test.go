package signaling

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// TestTLSCipherSuites: the SIP TLS listener refuses TLS 1.2 clients that
// offer only CBC or SHA-1 suites, and TLS below 1.2, and accepts ECDHE-AEAD.
func TestTLSCipherSuites(t *testing.T) {
	r := startRelayWith(t, newPKI(t), nil, nil)
	dial := func(c *tls.Config) error {
		c.InsecureSkipVerify = true // the handshake's parameters are under test, not the certificate
		conn, err := tls.DialWithDialer(&netDialer, "tcp", r.SIPTLSAddr().String(), c)
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}); err != nil {
		t.Fatalf("TLS 1.2 ECDHE-GCM refused: %v", err)
	}
	//nolint:gosec // offering weak suites is the point of the test
	if err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}); err == nil {
		t.Fatal("TLS 1.2 with only CBC-SHA1 and static-RSA suites accepted")
	}
	if err := dial(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

var netDialer = net.Dialer{Timeout: 5 * time.Second}
