package media

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
)

// DTLS-SRTP on a SIP leg (RFC 5763/5764) for PBXs that do DTLS but not ICE:
// the handshake runs on the RTP port towards the address the SDP gave, the
// peer's certificate must match its a=fingerprint, and SRTP is keyed from
// the handshake's exported keying material.

// ErrFingerprint is wrapped when the peer's certificate does not match the
// fingerprint its SDP announced.
var ErrFingerprint = errors.New("dtls: peer certificate does not match its a=fingerprint")

// DTLSOptions configures DTLSKeys.
type DTLSOptions struct {
	// Certificate is ours; its fingerprint is in our SDP.
	Certificate tls.Certificate
	// Client: we send the ClientHello (a=setup:active on our side).
	Client bool
	// Remote is where the peer's SDP says its media is.
	Remote netip.AddrPort
	// FingerprintHash and Fingerprint are the peer's a=fingerprint
	// (e.g. "sha-256", "AB:CD:...").
	FingerprintHash, Fingerprint string
	// Timeout bounds the handshake; 0 means 10 s.
	Timeout time.Duration
}

// dtlsProfiles are offered in the handshake, in our preference.
var dtlsProfiles = []dtls.SRTPProtectionProfile{
	dtls.SRTP_AEAD_AES_128_GCM,
	dtls.SRTP_AES128_CM_HMAC_SHA1_80,
	dtls.SRTP_AEAD_AES_256_GCM,
	dtls.SRTP_AES128_CM_HMAC_SHA1_32,
}

// Fingerprint formats the a=fingerprint value of a certificate with the
// given hash ("sha-256" by default).
func Fingerprint(cert tls.Certificate, hashName string) (string, error) {
	if len(cert.Certificate) == 0 {
		return "", errors.New("dtls: empty certificate")
	}
	if hashName == "" {
		hashName = "sha-256"
	}
	h, err := fingerprintHash(hashName)
	if err != nil {
		return "", err
	}
	h.Write(cert.Certificate[0])
	return hashName + " " + colonHex(h.Sum(nil)), nil
}

func fingerprintHash(name string) (hash.Hash, error) {
	switch strings.ToLower(name) {
	case "sha-1":
		return sha1.New(), nil
	case "sha-256":
		return sha256.New(), nil
	case "sha-384":
		return sha512.New384(), nil
	case "sha-512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("dtls: unsupported fingerprint hash %q", name)
}

func colonHex(b []byte) string {
	const digits = "0123456789ABCDEF"
	out := make([]byte, 0, len(b)*3)
	for i, x := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

// verifyFingerprint compares the leaf certificate's digest with the SDP's,
// in constant time.
func verifyFingerprint(raw [][]byte, hashName, want string) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no certificate", ErrFingerprint)
	}
	h, err := fingerprintHash(hashName)
	if err != nil {
		return err
	}
	h.Write(raw[0])
	got := colonHex(h.Sum(nil))
	if subtle.ConstantTimeCompare([]byte(got), []byte(strings.ToUpper(strings.TrimSpace(want)))) != 1 {
		return ErrFingerprint
	}
	return nil
}

// DTLSKeys runs a DTLS handshake on conn (a leg's RTP socket, or a test
// peer's) with the peer at o.Remote and returns the SRTP configuration it
// keys. Only DTLS records from o.Remote are read, and reading stops when the
// handshake is over, so media that follows is left on the socket for the
// leg. No media may be read from conn meanwhile.
func DTLSKeys(ctx context.Context, conn *net.UDPConn, o DTLSOptions) (*SRTPConfig, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	pc := &dtlsPacketConn{conn: conn, remote: unmap(o.Remote)}
	defer pc.stop()
	raddr := net.UDPAddrFromAddrPort(pc.remote)
	// pion/dtls closes the connection on a fingerprint mismatch and waits
	// for its reader: unblock it. Stopping the reader can then be what the
	// handshake reports ("transport stopped"), so the mismatch is noted
	// here and is what DTLSKeys returns.
	var mismatch atomic.Bool
	dc, err := newDTLSConn(pc, raddr, o.Certificate, o.Client, o.FingerprintHash, o.Fingerprint, func() {
		mismatch.Store(true)
		go pc.stop()
	})
	if err != nil {
		return nil, fmt.Errorf("dtls: %w", err)
	}
	stopOnDone := context.AfterFunc(ctx, pc.stop)
	defer stopOnDone()
	if err := dc.HandshakeContext(ctx); err != nil {
		pc.stop()
		_ = dc.Close()
		if mismatch.Load() && !errors.Is(err, ErrFingerprint) {
			err = fmt.Errorf("%w (the handshake then failed: %v)", ErrFingerprint, err)
		}
		return nil, fmt.Errorf("dtls handshake: %w", err)
	}
	cfgOut, err := srtpFromDTLS(dc, o.Client)
	// Stop reading before Close: the leg owns the socket from here on,
	// and no close_notify goes out (the peer keeps its session).
	pc.stop()
	_ = dc.Close()
	return cfgOut, err
}

// newDTLSConn sets up the DTLS-SRTP end of a handshake over pc (client or
// server) with our self-signed cert; the peer's certificate must match the
// fingerprint from its SDP, and onMismatch runs when it does not.
func newDTLSConn(pc net.PacketConn, raddr net.Addr, cert tls.Certificate, client bool, fpHash, fp string, onMismatch func()) (*dtls.Conn, error) {
	cfg := &dtls.Config{
		Certificates:           []tls.Certificate{cert},
		SRTPProtectionProfiles: dtlsProfiles,
		ExtendedMasterSecret:   dtls.RequireExtendedMasterSecret,
		InsecureSkipVerify:     true, // self-signed: the fingerprint is the identity
		ClientAuth:             dtls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			err := verifyFingerprint(raw, fpHash, fp)
			if err != nil && onMismatch != nil {
				onMismatch()
			}
			return err
		},
	}
	if client {
		return dtls.Client(pc, raddr, cfg)
	}
	return dtls.Server(pc, raddr, cfg)
}

func srtpFromDTLS(dc *dtls.Conn, client bool) (*SRTPConfig, error) {
	dp, ok := dc.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, errors.New("dtls: no SRTP protection profile negotiated (use_srtp)")
	}
	prof := srtp.ProtectionProfile(dp)
	kl, err := prof.KeyLen()
	if err != nil {
		return nil, err
	}
	sl, err := prof.SaltLen()
	if err != nil {
		return nil, err
	}
	state, ok := dc.ConnectionState()
	if !ok {
		return nil, errors.New("dtls: no connection state")
	}
	km, err := state.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 2*(kl+sl))
	if err != nil {
		return nil, fmt.Errorf("dtls: export keying material: %w", err)
	}
	// RFC 5764 §4.2: client key, server key, client salt, server salt.
	ck, sk := km[:kl], km[kl:2*kl]
	cs, ss := km[2*kl:2*kl+sl], km[2*kl+sl:]
	clientKS := append(append([]byte{}, ck...), cs...)
	serverKS := append(append([]byte{}, sk...), ss...)
	for i := range km {
		km[i] = 0
	}
	c := &SRTPConfig{Profile: prof, LocalKey: serverKS, RemoteKey: clientKS}
	if client {
		c.LocalKey, c.RemoteKey = clientKS, serverKS
	}
	return c, nil
}

// isDTLS says whether a datagram is a DTLS record (RFC 7983 first byte).
func isDTLS(b []byte) bool { return len(b) > 0 && b[0] >= 20 && b[0] <= 63 }

// dtlsPacketConn gives pion/dtls the DTLS records from one peer on a UDP
// socket, and gives the socket back when stopped.
type dtlsPacketConn struct {
	conn    *net.UDPConn
	remote  netip.AddrPort
	stopped atomic.Bool
	once    sync.Once
	mu      sync.Mutex // serialises reads with stop's deadline reset
}

var errDTLSStopped = errors.New("dtls: handshake transport stopped")

func (p *dtlsPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.stopped.Load() {
			return 0, nil, errDTLSStopped
		}
		n, from, err := p.conn.ReadFromUDPAddrPort(b)
		if err != nil {
			if p.stopped.Load() {
				return 0, nil, errDTLSStopped
			}
			return 0, nil, err
		}
		if unmap(from) != p.remote || !isDTLS(b[:n]) {
			continue // not the negotiated peer, or early media: not ours
		}
		return n, net.UDPAddrFromAddrPort(from), nil
	}
}

func (p *dtlsPacketConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	if p.stopped.Load() {
		return len(b), nil // swallowed: no alert after we are done
	}
	return p.conn.WriteToUDPAddrPort(b, p.remote)
}

// stop ends reading: a past deadline unblocks a pending read, and once it
// has returned the deadline is cleared for the leg.
func (p *dtlsPacketConn) stop() {
	p.once.Do(func() {
		p.stopped.Store(true)
		_ = p.conn.SetReadDeadline(time.Unix(1, 0))
		p.mu.Lock()
		_ = p.conn.SetReadDeadline(time.Time{})
		p.mu.Unlock()
	})
}

func (p *dtlsPacketConn) Close() error                       { p.stop(); return nil }
func (p *dtlsPacketConn) LocalAddr() net.Addr                { return p.conn.LocalAddr() }
func (p *dtlsPacketConn) SetDeadline(t time.Time) error      { return nil }
func (p *dtlsPacketConn) SetReadDeadline(t time.Time) error  { return nil }
func (p *dtlsPacketConn) SetWriteDeadline(t time.Time) error { return nil }

// DTLSKeys on a leg: the handshake on its RTP socket. Call it before
// StartSRTP and SetRemote, before anything reads the leg.
func (l *RTPLeg) DTLSKeys(ctx context.Context, o DTLSOptions) (*SRTPConfig, error) {
	conn, err := l.pair.rtp.goConn()
	if err != nil {
		return nil, fmt.Errorf("rtp leg %s: dtls: %w", l.local, err)
	}
	cfg, err := DTLSKeys(ctx, conn, o)
	if err == nil {
		keysExported.Add(1)
	}
	return cfg, err
}
