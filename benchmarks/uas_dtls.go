package benchmarks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/srtp/v3"

	"github.com/mediarelay/mediarelay/media"
)

// The trunk UAS as a DTLS-SRTP far end, for end-to-end calls (media_mode
// e2e): the relay passes the browser's fingerprint and a=setup to the UAS
// and the UAS's back, then forwards DTLS and SRTP unchanged, so the load
// client's handshake is with the UAS itself. The UAS answers with its own
// certificate, checks the browser's against the offer's a=fingerprint,
// keys SRTP from the handshake (RFC 5764 §4.2), and echoes by decrypting
// with the browser's keys and re-encrypting with its own: sending a
// packet back as it came would be a replay to the browser's context, and
// the echo carries its own SSRC and sequence anyway.

// uasHandshakeTimeout bounds a call's DTLS handshake at the UAS; a call
// whose browser never shows up is released by BYE before that.
const uasHandshakeTimeout = 30 * time.Second

// dtlsIdentity is a DTLS certificate and its a=fingerprint: the load
// client's, or the UAS's in the e2e scenario.
type dtlsIdentity struct {
	cert tls.Certificate
	fp   string // "sha-256 AB:CD:..."
}

func newDTLSIdentity() (*dtlsIdentity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dtls key: %w", err)
	}
	cert, err := selfsign.SelfSign(key)
	if err != nil {
		return nil, fmt.Errorf("dtls certificate: %w", err)
	}
	fp, err := media.Fingerprint(cert, "sha-256")
	if err != nil {
		return nil, fmt.Errorf("dtls fingerprint: %w", err)
	}
	return &dtlsIdentity{cert: cert, fp: fp}, nil
}

// uasKeys are a call's SRTP contexts once its handshake is done: rx with
// the browser's keys, tx with the UAS's. Only the UAS's reader uses them.
type uasKeys struct{ rx, tx *srtp.Context }

// uasDTLS is one call's DTLS session at the UAS, and pion/dtls's
// transport for it: the UAS's reader hands it the call's DTLS records;
// it writes on the shared RTP socket towards the relay. Stopped, it
// swallows writes, so no alert leaves a session that is merely dropped.
type uasDTLS struct {
	conn  *net.UDPConn
	to    netip.AddrPort
	in    chan []byte
	done  chan struct{}
	once  sync.Once
	keys  atomic.Pointer[uasKeys]
	mu    sync.Mutex
	dc    *dtls.Conn // kept until release: a lost last flight is retransmitted
	ended bool
}

// record takes a DTLS record from the reader (a copy: the reader's buffer
// is reused). A full queue drops it; DTLS retransmits.
func (d *uasDTLS) record(b []byte) {
	select {
	case d.in <- append([]byte(nil), b...):
	default:
	}
}

func (d *uasDTLS) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case rec := <-d.in:
		return copy(b, rec), net.UDPAddrFromAddrPort(d.to), nil
	case <-d.done:
		return 0, nil, net.ErrClosed
	}
}

func (d *uasDTLS) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-d.done:
		return len(b), nil
	default:
	}
	if _, err := d.conn.WriteToUDPAddrPort(b, d.to); err != nil {
		return 0, fmt.Errorf("uas dtls write: %w", err)
	}
	return len(b), nil
}

func (d *uasDTLS) stop()                            { d.once.Do(func() { close(d.done) }) }
func (d *uasDTLS) Close() error                     { d.stop(); return nil }
func (d *uasDTLS) LocalAddr() net.Addr              { return d.conn.LocalAddr() }
func (d *uasDTLS) SetDeadline(time.Time) error      { return nil }
func (d *uasDTLS) SetReadDeadline(time.Time) error  { return nil }
func (d *uasDTLS) SetWriteDeadline(time.Time) error { return nil }

// release ends the session: the transport stops, then the connection.
func (d *uasDTLS) release() {
	d.stop()
	d.mu.Lock()
	dc := d.dc
	d.ended = true
	d.mu.Unlock()
	if dc != nil {
		_ = dc.Close()
	}
}

// handshake runs the UAS's side of an end-to-end call's DTLS handshake,
// as client when the browser's setup made it active, and keys the call's
// SRTP. The browser's certificate must match fpHash/fp, its offer's
// a=fingerprint as the relay passed it on.
func (u *UAS) handshake(d *uasDTLS, client bool, fpHash, fp string) {
	ctx, cancel := context.WithTimeout(context.Background(), uasHandshakeTimeout)
	defer cancel()
	raddr := net.UDPAddrFromAddrPort(d.to)
	cfg := &dtls.Config{
		Certificates:           []tls.Certificate{u.id.cert},
		SRTPProtectionProfiles: browserSRTPProfiles,
		ExtendedMasterSecret:   dtls.RequestExtendedMasterSecret,
		InsecureSkipVerify:     true, // self-signed: the fingerprint is the identity
		ClientAuth:             dtls.RequireAnyClientCert,
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verifyFingerprint(fpHash, fp)(raw, chains)
		if err != nil {
			go d.stop() // pion/dtls waits for its reader, blocked in ReadFrom
		}
		return err
	}
	var (
		dc  *dtls.Conn
		err error
	)
	if client {
		dc, err = dtls.Client(d, raddr, cfg)
	} else {
		dc, err = dtls.Server(d, raddr, cfg)
	}
	if err != nil {
		u.log.Debug("uas: dtls", "to", d.to.String(), "err", err)
		return
	}
	stopOnDone := context.AfterFunc(ctx, d.stop)
	err = dc.HandshakeContext(ctx)
	stopOnDone()
	if err == nil {
		var enc, dec *srtp.Context
		if enc, dec, err = srtpContexts(dc, client); err == nil {
			d.keys.Store(&uasKeys{rx: dec, tx: enc})
			u.handshakes.Add(1)
		}
	}
	d.mu.Lock()
	ended := d.ended
	if err == nil && !ended {
		d.dc = dc
	}
	d.mu.Unlock()
	if err != nil || ended {
		d.stop()
		_ = dc.Close()
	}
	if err != nil {
		u.log.Debug("uas: dtls handshake", "to", d.to.String(), "err", err)
	}
}
