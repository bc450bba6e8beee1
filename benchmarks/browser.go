package benchmarks

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	psdp "github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// What the load client's calls say and do in the browser's place: the SDP
// offer, reading the answer, the DTLS transport and the SRTP keys.

// browserSRTPProfiles are the DTLS-SRTP profiles offered, in the order a
// pion-based browser (and pion's own default) offers them.
var browserSRTPProfiles = []dtls.SRTPProtectionProfile{
	dtls.SRTP_AEAD_AES_256_GCM,
	dtls.SRTP_AEAD_AES_128_GCM,
	dtls.SRTP_AES128_CM_HMAC_SHA1_80,
}

const (
	setupActive  = sdp.SetupActive
	setupPassive = sdp.SetupPassive
)

// offer is the call's SDP offer: audio only, one m-line bundled and
// rtcp-muxed, our ICE credentials and DTLS fingerprint, setup:actpass,
// one host candidate on the call's port, the codec and our SSRC. c= and
// the m= port carry the candidate, as a browser's description does once
// gathering is complete. On ICE-TCP the one candidate is an active TCP
// one, whose port is 9 (RFC 6544 §4.5: it connects out, nobody connects
// to it), as a browser offers it where UDP is blocked.
func (cl *Client) offer(c *call) string {
	var b strings.Builder
	port := 9
	if c.sock != nil {
		port = c.sock.port
	}
	fmt.Fprintf(&b, "v=0\r\no=- %d 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", randUint32())
	b.WriteString("a=group:BUNDLE 0\r\na=msid-semantic: WMS bench\r\n")
	fmt.Fprintf(&b, "m=audio %d UDP/TLS/RTP/SAVPF %d\r\nc=IN IP4 127.0.0.1\r\n", port, cl.codec.PayloadType)
	fmt.Fprintf(&b, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=fingerprint:%s\r\na=setup:actpass\r\n", c.ufrag, c.pwd, cl.fp)
	b.WriteString("a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n")
	if cl.codec.Channels > 1 {
		fmt.Fprintf(&b, "a=rtpmap:%d %s/%d/%d\r\n", cl.codec.PayloadType, cl.codec.Name, cl.codec.ClockRate, cl.codec.Channels)
	} else {
		fmt.Fprintf(&b, "a=rtpmap:%d %s/%d\r\n", cl.codec.PayloadType, cl.codec.Name, cl.codec.ClockRate)
	}
	if cl.codec.Name == "opus" {
		fmt.Fprintf(&b, "a=fmtp:%d minptime=10;useinbandfec=1\r\n", cl.codec.PayloadType)
	}
	fmt.Fprintf(&b, "a=ssrc:%d cname:bench\r\na=ssrc:%d msid:bench audio\r\na=msid:bench audio\r\n", c.ssrc, c.ssrc)
	if cl.transport == TransportTCP {
		// RFC 8445 §5.1.2.1 host priority with RFC 6544 §4.2's local
		// preference for an active candidate, as Chrome ranks it.
		fmt.Fprintf(&b, "a=candidate:1 1 tcp 1518280447 127.0.0.1 %d typ host tcptype active\r\n", port)
	} else {
		fmt.Fprintf(&b, "a=candidate:1 1 udp 2130706431 127.0.0.1 %d typ host\r\n", port)
	}
	b.WriteString("a=end-of-candidates\r\n")
	return b.String()
}

// answerParams is what the client needs from an answer.
type answerParams struct {
	ufrag, pwd string
	fpHash, fp string
	setup      string           // active or passive: the peer's DTLS role
	pt         uint8            // our codec's payload type as answered
	cands      []netip.AddrPort // UDP IPv4 candidates of component 1
	tcpCands   []netip.AddrPort // passive ICE-TCP IPv4 candidates of component 1
}

// maxCandidates bounds the checks one answer can make us send.
const maxCandidates = 8

// parseAnswer reads an answer to our offer. Every failure is an error: the
// answer comes from the system under test.
func parseAnswer(answer string, codec Codec) (answerParams, error) {
	var ap answerParams
	s, a, err := sdp.Parse([]byte(answer))
	if err != nil {
		return ap, err
	}
	if a.Port == 0 {
		return ap, errors.New("audio rejected (port 0)")
	}
	found := false
	for _, k := range a.Codecs {
		if k.Is(codec.Name) {
			ap.pt, found = k.PT, true
			break
		}
	}
	if !found {
		return ap, fmt.Errorf("answer has no %s", codec.Name)
	}
	get := func(key string) string {
		for _, at := range a.Attrs {
			if at.Key == key {
				return at.Value
			}
		}
		v, _ := s.Attribute(key)
		return v
	}
	ap.ufrag, ap.pwd = get("ice-ufrag"), get("ice-pwd")
	if ap.ufrag == "" || ap.pwd == "" {
		return ap, errors.New("no ICE credentials (a=ice-ufrag, a=ice-pwd)")
	}
	if ap.fpHash, ap.fp, err = sdp.ParseFingerprint(get("fingerprint")); err != nil {
		return ap, err
	}
	if ap.setup, err = sdp.ParseSetup(get("setup")); err != nil {
		return ap, err
	}
	if ap.setup != setupActive && ap.setup != setupPassive {
		return ap, fmt.Errorf("a=setup:%s is not an answer's role", ap.setup)
	}
	ap.cands, ap.tcpCands = candidates(a.Attrs)
	if len(ap.cands) == 0 && len(ap.tcpCands) == 0 && a.Addr.Is4() {
		// No candidates: the c= address and m= port are the peer's.
		ap.cands = []netip.AddrPort{netip.AddrPortFrom(a.Addr, uint16(a.Port))}
	}
	if len(ap.cands) == 0 && len(ap.tcpCands) == 0 {
		return ap, errors.New("no IPv4 candidate")
	}
	return ap, nil
}

// candidates returns the IPv4 candidates of component 1 (RFC 8839 §5.1:
// foundation component transport priority address port typ type, then
// extensions): UDP ones, and TCP ones of tcptype passive (RFC 6544 §4.5),
// the only kind an active client connects to.
func candidates(attrs []psdp.Attribute) (udp, tcp []netip.AddrPort) {
	for _, at := range attrs {
		if at.Key != "candidate" {
			continue
		}
		f := strings.Fields(at.Value)
		if len(f) < 8 || f[1] != "1" {
			continue
		}
		isTCP := strings.EqualFold(f[2], "tcp")
		if !isTCP && !strings.EqualFold(f[2], "udp") {
			continue
		}
		if isTCP && !passiveTCP(f[8:]) {
			continue
		}
		ip, err := netip.ParseAddr(f[4])
		if err != nil || !ip.Is4() {
			continue
		}
		port, err := strconv.ParseUint(f[5], 10, 16)
		if err != nil || port == 0 {
			continue
		}
		ap := netip.AddrPortFrom(ip, uint16(port))
		if isTCP && len(tcp) < maxCandidates {
			tcp = append(tcp, ap)
		} else if !isTCP && len(udp) < maxCandidates {
			udp = append(udp, ap)
		}
	}
	return udp, tcp
}

// passiveTCP says whether a candidate's extension attributes (name value
// pairs after its type) include tcptype passive.
func passiveTCP(ext []string) bool {
	for i := 0; i+1 < len(ext); i += 2 {
		if strings.EqualFold(ext[i], "tcptype") {
			return strings.EqualFold(ext[i+1], "passive")
		}
	}
	return false
}

// verifyFingerprint checks the peer's certificate against its SDP's
// a=fingerprint, as a browser does: the certificate is self-signed, the
// fingerprint is its identity.
func verifyFingerprint(hash, want string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("dtls: peer sent no certificate")
		}
		got, err := media.Fingerprint(tls.Certificate{Certificate: raw[:1]}, hash)
		if err != nil {
			return fmt.Errorf("dtls: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(hash+" "+want)) != 1 {
			return fmt.Errorf("dtls: peer certificate does not match a=fingerprint (%s)", hash)
		}
		return nil
	}
}

// srtpContexts exports the SRTP master keys from a finished handshake
// (RFC 5764 §4.2: client key, server key, client salt, server salt) and
// returns our sending and receiving contexts.
func srtpContexts(dc *dtls.Conn, client bool) (enc, dec *srtp.Context, err error) {
	dp, ok := dc.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, nil, errors.New("dtls: no SRTP protection profile negotiated (use_srtp)")
	}
	prof := srtp.ProtectionProfile(dp)
	kl, err := prof.KeyLen()
	if err != nil {
		return nil, nil, fmt.Errorf("srtp profile %s: %w", prof, err)
	}
	sl, err := prof.SaltLen()
	if err != nil {
		return nil, nil, fmt.Errorf("srtp profile %s: %w", prof, err)
	}
	state, ok := dc.ConnectionState()
	if !ok {
		return nil, nil, errors.New("dtls: no connection state after the handshake")
	}
	km, err := state.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 2*(kl+sl))
	if err != nil {
		return nil, nil, fmt.Errorf("dtls: export keying material: %w", err)
	}
	ck, sk, cs, ss := km[:kl], km[kl:2*kl], km[2*kl:2*kl+sl], km[2*kl+sl:]
	lk, ls, rk, rs := sk, ss, ck, cs
	if client {
		lk, ls, rk, rs = ck, cs, sk, ss
	}
	if enc, err = srtp.CreateContext(lk, ls, prof); err != nil {
		return nil, nil, fmt.Errorf("srtp sending context: %w", err)
	}
	if dec, err = srtp.CreateContext(rk, rs, prof, media.SRTPReplayProtection()); err != nil {
		return nil, nil, fmt.Errorf("srtp receiving context: %w", err)
	}
	return enc, dec, nil
}

// isClientHello says whether a DTLS record is a handshake record carrying
// a ClientHello (RFC 6347 §4.1: 13-byte record header, then the handshake
// message type, 1).
func isClientHello(rec []byte) bool {
	return len(rec) > 13 && rec[0] == 22 && rec[13] == 1
}

// dtlsPacketConn is pion/dtls's transport for one call: the shard hands it
// the DTLS records (RFC 7983 first byte 20-63) that arrive from the pair's
// remote end; it writes on the call's socket. Stopped, it swallows writes,
// so no alert goes out from a session we merely stop tracking.
type dtlsPacketConn struct {
	sh    *shard
	c     *call
	raddr net.Addr
	done  chan struct{}
	once  sync.Once
}

func (p *dtlsPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case rec := <-p.c.dtlsIn:
		return copy(b, rec), p.raddr, nil
	case <-p.done:
		return 0, nil, net.ErrClosed
	}
}

func (p *dtlsPacketConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-p.done:
		return len(b), nil
	default:
	}
	if err := p.sh.write(p.c, b); err != nil {
		return 0, fmt.Errorf("dtls write: %w", err)
	}
	return len(b), nil
}

func (p *dtlsPacketConn) stop() { p.once.Do(func() { close(p.done) }) }

func (p *dtlsPacketConn) Close() error { p.stop(); return nil }
func (p *dtlsPacketConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p.c.localPort()}
}
func (p *dtlsPacketConn) SetDeadline(time.Time) error      { return nil }
func (p *dtlsPacketConn) SetReadDeadline(time.Time) error  { return nil }
func (p *dtlsPacketConn) SetWriteDeadline(time.Time) error { return nil }
