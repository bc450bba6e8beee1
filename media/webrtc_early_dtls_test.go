package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	psdp "github.com/pion/sdp/v3"
	"github.com/pion/stun/v4"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Early DTLS (RFC 8445 §7.3.1.4 and RFC 8842 §4.3 / RFC 5763 §5): a browser
// may start DTLS on a candidate pair as soon as a connectivity check on it
// succeeded, before it nominates the pair (Chromium does, as DTLS client
// when it answers a=setup:active). A relay that only accepts DTLS once
// USE-CANDIDATE arrived drops those ClientHellos, and the first second of
// a call into a browser is lost while the browser retransmits.
//
// The client below is a browser reduced to the wire: one UDP socket per
// host candidate, STUN checks built by hand, a pion/dtls handshake and SRTP
// keyed from it, so that what it does and when (check, DTLS, nomination)
// is the test's choice and not a WebRTC stack's.

const (
	// earlyHandshakeBound bounds a DTLS handshake started right after a
	// successful check. A browser retransmits its first flight after 1 s
	// and then 2 s, so a relay that misses one or two flights still
	// passes; one that waits for a nomination that never comes does not,
	// since it waits up to earlyConnectTimeout.
	earlyHandshakeBound = 5 * time.Second
	// earlyConnectTimeout is the relay's ICE+DTLS bound in these tests:
	// well beyond earlyHandshakeBound, so the handshake bound is what fails.
	earlyConnectTimeout = 30 * time.Second
)

// TestWebRTCEarlyDTLS runs DTLS-SRTP with the relay's WebRTC leg on a
// candidate pair that has passed a connectivity check but is not (yet)
// nominated, in both offer directions and both DTLS roles, and checks
// that SRTP then flows both ways; later nominations, and a renomination to
// a second candidate pair, must keep media flowing on the nominated pair.
//
// The "nominated" cases nominate on the first check, as the relay has
// always handled; they also show that the raw client is right.
func TestWebRTCEarlyDTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		// relayOffers: the relay offers (a call into a browser) and the
		// client answers a=setup:active; else the client offers actpass
		// and takes whichever role the relay's answer leaves it.
		relayOffers bool
		// nominateFirst puts USE-CANDIDATE on the first check, before DTLS.
		nominateFirst bool
		// nominateAfter nominates the checked pair once DTLS is up.
		nominateAfter bool
		// renominate then checks and nominates a second pair (another
		// local socket) and expects media to move to it.
		renominate bool
	}{
		{name: "into-browser/never-nominated", relayOffers: true},
		{name: "from-browser/never-nominated"},
		{name: "into-browser/nominated-after-dtls", relayOffers: true, nominateAfter: true},
		{name: "into-browser/renominated-after-dtls", relayOffers: true, nominateAfter: true, renominate: true},
		{name: "into-browser/nominated/renominated", relayOffers: true, nominateFirst: true, renominate: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", ConnectTimeout: earlyConnectTimeout})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			c := newRawICEClient(t, 2)
			var leg *WebRTCLeg
			if tc.relayOffers {
				var offer string
				leg, offer, err = w.Offer([]string{"PCMU"})
				if err != nil {
					t.Fatal(err)
				}
				c.learnRelay(offer)
				if err := leg.SetAnswer(c.sdp("answer", "active")); err != nil {
					t.Fatalf("SetAnswer: %v", err)
				}
			} else {
				var answer string
				leg, answer, err = w.Answer(c.sdp("offer", "actpass"), "PCMU")
				if err != nil {
					t.Fatal(err)
				}
				c.learnRelay(answer)
			}
			defer leg.Close()
			fromLeg := readLegAsync(leg)

			a, b := c.socks[0], c.socks[1]
			c.check(a, tc.nominateFirst)
			c.handshake(earlyHandshakeBound)
			c.exchange(leg, a, fromLeg)
			if tc.nominateAfter {
				c.check(a, true)
				c.exchange(leg, a, fromLeg)
			}
			if tc.renominate {
				c.check(b, true)
				c.exchange(leg, b, fromLeg)
				c.noMediaOn(a, leg, b)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := leg.WaitConnected(ctx); err != nil {
				t.Errorf("media flows, but the leg does not report connected: %v", err)
			}
			select {
			case <-leg.Failed():
				t.Error("the leg reports failed")
			default:
			}
		})
	}
}

// rawICEClient is the browser stand-in: host candidates on loopback, ICE
// credentials, a DTLS certificate, and once keyed, an SRTP session.
type rawICEClient struct {
	t          testing.TB
	socks      []*rawSocket
	ufrag, pwd string
	tiebreaker uint64
	cert       tls.Certificate
	ssrc       uint32
	seq        uint16 // of the client's packets
	legSeq     uint16 // of the packets written to the leg

	// learned from the relay's SDP
	relayUfrag, relayPwd string
	relayFPHash, relayFP string
	relaySetup           string
	relayMid             string
	relayAddr            netip.AddrPort

	dtlsOn *rawSocket // the socket DTLS ran on
	srtp   *srtpSession
}

// newRawICEClient opens n host candidates (UDP sockets on 127.0.0.1).
func newRawICEClient(t testing.TB, n int) *rawICEClient {
	t.Helper()
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	c := &rawICEClient{
		t:          t,
		ufrag:      fmt.Sprintf("raw%x", rnd[:3]),
		pwd:        fmt.Sprintf("rawpassword%x", rnd[3:11]),
		tiebreaker: binary.BigEndian.Uint64(rnd[8:16]),
		cert:       cert,
		ssrc:       binary.BigEndian.Uint32(rnd[4:8]),
		seq:        binary.BigEndian.Uint16(rnd[0:2]),
	}
	// Host priorities (RFC 8445 §5.1.2.1) that rise with the index, so
	// that a renomination to a later socket is also a move to a better pair.
	for i := 0; i < n; i++ {
		c.socks = append(c.socks, newRawSocket(t, 2130706431-uint32(n-1-i)*256))
	}
	return c
}

// sdp is the client's offer or answer: PCMU, rtcp-mux, its host
// candidates, its certificate's fingerprint and the given a=setup.
func (c *rawICEClient) sdp(kind, setup string) string {
	c.t.Helper()
	fp, err := Fingerprint(c.cert, "sha-256")
	if err != nil {
		c.t.Fatal(err)
	}
	mid := "0"
	if kind == "answer" {
		mid = c.relayMid
	}
	port := c.socks[0].addr.Port()
	lines := []string{
		"v=0",
		"o=- 4242 2 IN IP4 127.0.0.1",
		"s=-",
		"t=0 0",
		"a=group:BUNDLE " + mid,
		fmt.Sprintf("m=audio %d UDP/TLS/RTP/SAVPF 0", port),
		"c=IN IP4 127.0.0.1",
		"a=mid:" + mid,
		"a=ice-ufrag:" + c.ufrag,
		"a=ice-pwd:" + c.pwd,
		"a=fingerprint:" + fp,
		"a=setup:" + setup,
		"a=rtcp-mux",
		"a=sendrecv",
		"a=rtpmap:0 PCMU/8000",
		fmt.Sprintf("a=ssrc:%d cname:rawclient", c.ssrc),
	}
	for i, s := range c.socks {
		lines = append(lines, fmt.Sprintf("a=candidate:%d 1 udp %d %s %d typ host", i+1, s.priority, s.addr.Addr(), s.addr.Port()))
	}
	lines = append(lines, "a=end-of-candidates")
	return strings.Join(lines, "\r\n") + "\r\n"
}

// learnRelay takes the relay's ICE credentials, fingerprint, DTLS role and
// UDP candidate from its SDP.
func (c *rawICEClient) learnRelay(relaySDP string) {
	c.t.Helper()
	var d psdp.SessionDescription
	if err := d.UnmarshalString(relaySDP); err != nil {
		c.t.Fatalf("relay SDP: %v\n%s", err, relaySDP)
	}
	if len(d.MediaDescriptions) != 1 {
		c.t.Fatalf("relay SDP has %d media sections:\n%s", len(d.MediaDescriptions), relaySDP)
	}
	attr := func(key string) string {
		if v, ok := d.MediaDescriptions[0].Attribute(key); ok {
			return v
		}
		v, _ := d.Attribute(key)
		return v
	}
	c.relayUfrag, c.relayPwd, c.relaySetup, c.relayMid = attr("ice-ufrag"), attr("ice-pwd"), attr("setup"), attr("mid")
	var err error
	if c.relayFPHash, c.relayFP, err = sdp.ParseFingerprint(attr("fingerprint")); err != nil {
		c.t.Fatalf("relay fingerprint: %v", err)
	}
	for _, a := range d.MediaDescriptions[0].Attributes {
		if a.Key != "candidate" {
			continue
		}
		cand, err := ice.UnmarshalCandidate(a.Value)
		if err != nil || cand.NetworkType() != ice.NetworkTypeUDP4 {
			continue
		}
		if addr, err := netip.ParseAddr(cand.Address()); err == nil {
			c.relayAddr = netip.AddrPortFrom(addr, uint16(cand.Port()))
			break
		}
	}
	if c.relayUfrag == "" || c.relayPwd == "" || !c.relayAddr.IsValid() {
		c.t.Fatalf("relay SDP lacks ICE credentials or a UDP candidate:\n%s", relaySDP)
	}
}

// check sends a Binding request from s (USERNAME relay:client, PRIORITY,
// ICE-CONTROLLING, USE-CANDIDATE if nominate, MESSAGE-INTEGRITY with the
// relay's password, FINGERPRINT) and waits for the relay's authenticated
// success response, retransmitting as an ICE agent does.
func (c *rawICEClient) check(s *rawSocket, nominate bool) {
	c.t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(c.relayUfrag + ":" + c.ufrag),
		ice.PriorityAttr(s.priority), ice.AttrControlling(c.tiebreaker)}
	if nominate {
		setters = append(setters, ice.UseCandidate())
	}
	setters = append(setters, stun.NewShortTermIntegrity(c.relayPwd), stun.Fingerprint)
	req, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.After(10 * time.Second) // failsafe only
	for {
		if _, err := s.conn.WriteToUDPAddrPort(req.Raw, c.relayAddr); err != nil {
			c.t.Fatal(err)
		}
		retry := time.After(250 * time.Millisecond)
	wait:
		for {
			select {
			case raw := <-s.stun:
				res := &stun.Message{Raw: raw}
				if res.Decode() != nil || res.TransactionID != req.TransactionID {
					continue
				}
				if res.Type != stun.BindingSuccess {
					c.t.Fatalf("check from %s (nominate %v): relay answered %s", s.addr, nominate, res.Type)
				}
				if err := stun.NewShortTermIntegrity(c.relayPwd).Check(res); err != nil {
					c.t.Fatalf("check response: MESSAGE-INTEGRITY: %v", err)
				}
				var mapped stun.XORMappedAddress
				if err := mapped.GetFrom(res); err != nil {
					c.t.Fatalf("check response: XOR-MAPPED-ADDRESS: %v", err)
				}
				if got := netip.AddrPortFrom(netip.MustParseAddr(mapped.IP.String()), uint16(mapped.Port)); got != s.addr {
					c.t.Fatalf("check response maps %s to %s", s.addr, got)
				}
				return
			case <-retry:
				break wait
			case <-deadline:
				c.t.Fatalf("no response to the check from %s (nominate %v)", s.addr, nominate)
			}
		}
	}
}

// handshake runs DTLS on the first socket, in the role the SDP exchange
// gave the client, and keys SRTP from it (RFC 5764 §4.2). It must
// complete within bound.
func (c *rawICEClient) handshake(bound time.Duration) {
	c.t.Helper()
	s := c.socks[0]
	client := c.relaySetup != "active" // the relay answered passive, or it offered actpass and we answered active
	cfg := &dtls.Config{
		Certificates:           []tls.Certificate{c.cert},
		SRTPProtectionProfiles: dtlsProfiles,
		ExtendedMasterSecret:   dtls.RequireExtendedMasterSecret,
		InsecureSkipVerify:     true, // self-signed: the SDP's fingerprint is the identity
		ClientAuth:             dtls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyFingerprint(raw, c.relayFPHash, c.relayFP)
		},
	}
	pc := &rawDTLSConn{s: s, to: c.relayAddr, done: make(chan struct{})}
	var (
		dc  *dtls.Conn
		err error
	)
	raddr := net.UDPAddrFromAddrPort(c.relayAddr)
	if client {
		dc, err = dtls.Client(pc, raddr, cfg)
	} else {
		dc, err = dtls.Server(pc, raddr, cfg)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	// pion/dtls waits for its reader on Close: unblock it first.
	c.t.Cleanup(func() {
		_ = pc.Close()
		_ = dc.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	// On timeout the handshake waits for its reader: unblock it.
	defer context.AfterFunc(ctx, func() { _ = pc.Close() })()
	start := time.Now()
	if err := dc.HandshakeContext(ctx); err != nil {
		c.t.Fatalf("DTLS handshake (client %v) right after the check: %v after %v "+
			"(the relay's own ICE+DTLS bound is %v)", client, err, time.Since(start).Round(time.Millisecond), earlyConnectTimeout)
	}
	c.t.Logf("DTLS handshake (client %v) took %v", client, time.Since(start).Round(time.Millisecond))
	keys, err := srtpFromDTLS(dc, client)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.srtp, err = newSRTPSession(keys); err != nil {
		c.t.Fatal(err)
	}
	c.dtlsOn = s
}

// exchange checks SRTP both ways on socket s: packets the client sends
// from s come out of the leg's ReadRTP, and packets written to the leg
// arrive at s and decrypt. Packets are repeated until one gets through
// (the relay may drop the very first while it installs keys or the pair).
func (c *rawICEClient) exchange(leg *WebRTCLeg, s *rawSocket, fromLeg <-chan []byte) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second) // failsafe, not a timing assertion
	// Client to relay.
	for got := false; !got; {
		if time.Now().After(deadline) {
			c.t.Fatalf("no SRTP from the client's %s came out of the leg", s.addr)
		}
		want := c.send(s)
		timeout := time.After(20 * time.Millisecond)
	drain:
		for {
			select {
			case pkt := <-fromLeg:
				if bytes.HasSuffix(pkt, want) {
					got = true
					break drain
				}
			case <-timeout:
				break drain
			}
		}
	}
	// Relay to client.
	for got := false; !got; {
		if time.Now().After(deadline) {
			c.t.Fatalf("nothing written to the leg reached the client's %s", s.addr)
		}
		payload := c.writeLeg(leg)
		timeout := time.After(20 * time.Millisecond)
	drain2:
		for {
			select {
			case raw := <-s.rtp:
				if plain := c.decrypt(raw); plain != nil && bytes.Equal(plain.Payload, payload) {
					got = true
					break drain2
				}
			case <-timeout:
				break drain2
			}
		}
	}
}

// noMediaOn checks, after a renomination from old to now, that what the
// leg sends goes to now only.
func (c *rawICEClient) noMediaOn(old *rawSocket, leg *WebRTCLeg, now *rawSocket) {
	c.t.Helper()
	for len(old.rtp) > 0 {
		<-old.rtp
	}
	const n = 10
	for i := 0; i < n; i++ {
		c.writeLeg(leg)
		time.Sleep(20 * time.Millisecond)
	}
	got := 0
	for failsafe := time.After(5 * time.Second); got < n; {
		select {
		case raw := <-now.rtp:
			if c.decrypt(raw) != nil {
				got++
			}
		case <-failsafe:
			c.t.Fatalf("only %d of %d packets reached the newly nominated %s", got, n, now.addr)
		}
	}
	time.Sleep(100 * time.Millisecond) // let anything misrouted land
	if k := len(old.rtp); k > 0 {
		c.t.Fatalf("after the renomination to %s, %d packets still went to %s", now.addr, k, old.addr)
	}
}

// send protects one PCMU packet and sends it from s; it returns the payload.
func (c *rawICEClient) send(s *rawSocket) []byte {
	c.t.Helper()
	c.seq++
	payload := []byte(fmt.Sprintf("raw client packet %05d", c.seq))
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: c.seq,
		Timestamp: uint32(c.seq) * 160, SSRC: c.ssrc}, Payload: payload}
	plain, err := pkt.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	out, err := c.srtp.encRTP.EncryptRTP(nil, plain, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := s.conn.WriteToUDPAddrPort(out, c.relayAddr); err != nil {
		c.t.Fatal(err)
	}
	return payload
}

// writeLeg writes one RTP packet to the leg and returns its payload.
func (c *rawICEClient) writeLeg(leg *WebRTCLeg) []byte {
	c.t.Helper()
	c.legSeq++
	payload := []byte(fmt.Sprintf("relay leg packet %05d", c.legSeq))
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: c.legSeq,
		Timestamp: uint32(c.legSeq) * 160, SSRC: 4711}, Payload: payload}
	b, err := pkt.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := leg.WriteRTP(b); err != nil {
		c.t.Fatalf("WriteRTP: %v", err)
	}
	return payload
}

// decrypt authenticates an SRTP packet from the relay; nil if it fails.
func (c *rawICEClient) decrypt(raw []byte) *rtp.Packet {
	plain, _, ok := c.srtp.decryptRTP(raw)
	if !ok {
		return nil
	}
	var pkt rtp.Packet
	if pkt.Unmarshal(plain) != nil {
		return nil
	}
	return &pkt
}

// readLegAsync reads the leg until it is closed and hands each packet on.
func readLegAsync(leg *WebRTCLeg) <-chan []byte {
	out := make(chan []byte, 256)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, err := leg.ReadRTP(buf)
			if err != nil {
				return
			}
			select {
			case out <- bytes.Clone(buf[:n]):
			default:
			}
		}
	}()
	return out
}

// rawSocket is one host candidate: a UDP socket whose datagrams are sorted
// by their first byte (RFC 7983) into STUN, DTLS and RTP.
type rawSocket struct {
	conn     *net.UDPConn
	addr     netip.AddrPort
	priority uint32
	stun     chan []byte
	dtls     chan []byte
	rtp      chan []byte
	closed   chan struct{}
}

func newRawSocket(t testing.TB, priority uint32) *rawSocket {
	t.Helper()
	conn := udpListen(t)
	s := &rawSocket{conn: conn, addr: udpAddr(conn), priority: priority,
		stun: make(chan []byte, 64), dtls: make(chan []byte, 64), rtp: make(chan []byte, 256), closed: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.closed)
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var to chan []byte
			switch b := buf[0]; {
			case n == 0:
				continue
			case b <= 3:
				to = s.stun
			case b >= 20 && b <= 63:
				to = s.dtls
			case b >= 128 && b <= 191 && n > 1 && (buf[1] < 192 || buf[1] > 223): // RTP, not RTCP
				to = s.rtp
			default:
				continue
			}
			select {
			case to <- bytes.Clone(buf[:n]):
			default: // nobody is reading this kind now
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return s
}

// rawDTLSConn gives pion/dtls the DTLS records of a rawSocket and sends
// its records to the relay.
type rawDTLSConn struct {
	s    *rawSocket
	to   netip.AddrPort
	once sync.Once
	done chan struct{}
}

func (p *rawDTLSConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case rec := <-p.s.dtls:
		return copy(b, rec), net.UDPAddrFromAddrPort(p.to), nil
	case <-p.done:
		return 0, nil, net.ErrClosed
	case <-p.s.closed:
		return 0, nil, net.ErrClosed
	}
}

func (p *rawDTLSConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	return p.s.conn.WriteToUDPAddrPort(b, p.to)
}

func (p *rawDTLSConn) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *rawDTLSConn) LocalAddr() net.Addr                { return p.s.conn.LocalAddr() }
func (p *rawDTLSConn) SetDeadline(t time.Time) error      { return nil }
func (p *rawDTLSConn) SetReadDeadline(t time.Time) error  { return nil }
func (p *rawDTLSConn) SetWriteDeadline(t time.Time) error { return nil }
