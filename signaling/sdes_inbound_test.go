package signaling

// SDES-SRTP on calls from trunks into browsers: a sipgo UAC over TLS offers
// RTP/SAVP with a=crypto, encrypts and decrypts with pion/srtp.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// sdesCaller is a trunk that calls the relay with an SDES offer.
type sdesCaller struct {
	t       *testing.T
	dua     *sipgo.DialogUA
	rtpConn *net.UDPConn
	mine    sdp.Crypto
	dcs     *sipgo.DialogClientSession
	remote  netip.AddrPort
	dec     *srtp.Context
}

func newSDESCaller(t *testing.T, pki *testPKI) *sdesCaller {
	t.Helper()
	opts := []sipgo.UserAgentOption{sipgo.WithUserAgent("sdes-trunk"), sipgo.WithUserAgentHostname("127.0.0.1")}
	if pki != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pki.pool(), MinVersion: tls.VersionTLS12}))
	}
	ua, _ := sipgo.NewUA(opts...)
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); ua.Close() })
	c := &sdesCaller{t: t, rtpConn: conn,
		dua: &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "trunk", Host: "127.0.0.1", Port: 5999}}}}
	c.mine, _ = sdp.GenerateCrypto(7, media.SuiteAESCM128SHA1_80)
	return c
}

// offer is an SDP offer with proto and, when withCrypto, a GCM line the
// relay should skip only if unsupported, then our AES_CM line.
func (c *sdesCaller) offer(proto string, withCrypto bool) []byte {
	o := sdp.Offer{SessionID: 5, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Proto: proto,
		Port: c.rtpConn.LocalAddr().(*net.UDPAddr).Port, Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.DTMF8k}}
	if withCrypto {
		o.Crypto = []string{"3 FOO_BAR_SUITE inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", c.mine.String()}
	}
	return o.Marshal()
}

// call INVITEs user at addr over transport; it returns the final response.
func (c *sdesCaller) call(ctx context.Context, addr net.Addr, transport, user string, body []byte) *sip.Response {
	c.t.Helper()
	host, port := splitHostPort(addr.String())
	uri := sip.Uri{User: user, Host: host, Port: port}
	if transport == "tls" {
		uri.UriParams = sip.HeaderParams{{K: "transport", V: "tls"}}
	}
	dcs, err := c.dua.Invite(ctx, uri, body, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		c.t.Fatalf("invite: %v", err)
	}
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var dr *sipgo.ErrDialogResponse
	if errors.As(err, &dr) {
		return dr.Res
	}
	if err != nil {
		c.t.Fatalf("invite: %v", err)
	}
	if err := dcs.Ack(ctx); err != nil {
		c.t.Fatal(err)
	}
	c.dcs = dcs
	return dcs.InviteResponse
}

// echoCheck sends n SRTP frames and counts those that come back decrypted
// and unchanged.
func (c *sdesCaller) echoCheck(n int) int {
	prof, _ := media.SRTPProfile(c.mine.Suite)
	enc, err := srtpContext(prof, c.mine.Keys[0].KeySalt)
	if err != nil {
		c.t.Fatal(err)
	}
	got := make(chan string, n*2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_ = c.rtpConn.SetReadDeadline(time.Now().Add(time.Second))
			k, err := c.rtpConn.Read(buf)
			if err != nil {
				return
			}
			plain, err := c.dec.DecryptRTP(nil, buf[:k], nil)
			if err != nil {
				continue
			}
			var p rtp.Packet
			if p.Unmarshal(plain) == nil {
				got <- string(p.Payload)
			}
		}
	}()
	seq := uint16(time.Now().UnixNano())
	sent := map[string]bool{}
	for i := 0; i < n; i++ {
		payload := make([]byte, 160)
		copy(payload, fmt.Sprintf("srtp-%d-%04d", seq, i))
		sent[string(payload)] = true
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq + uint16(i), Timestamp: uint32(i * 160), SSRC: 4242}, Payload: payload}
		b, _ := pkt.Marshal()
		out, err := enc.EncryptRTP(nil, b, nil)
		if err != nil {
			c.t.Fatal(err)
		}
		_, _ = c.rtpConn.WriteToUDPAddrPort(out, c.remote)
		time.Sleep(20 * time.Millisecond)
	}
	<-done
	close(got)
	matched := 0
	for s := range got {
		if sent[s] {
			matched++
		}
	}
	return matched
}

func sdesInboundRelay(t *testing.T, pki *testPKI, tr config.Trunk) *Relay {
	return startRelayWith(t, pki, nil, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.Trunks = []config.Trunk{tr}
	}))
}

// TestInboundSDESOverTLS: a trunk calls a browser over TLS offering
// RTP/SAVP; the relay answers RTP/SAVP with one a=crypto line of its own
// under the trunk's tag, and audio goes both ways through SRTP.
func TestInboundSDESOverTLS(t *testing.T) {
	for _, policy := range []string{mediaplan.SRTPRequired, mediaplan.SRTPOptional} {
		t.Run(policy, func(t *testing.T) {
			pki := newPKI(t)
			c := newSDESCaller(t, pki)
			r := sdesInboundRelay(t, pki, config.Trunk{Name: "secure", Match: ".*", Address: "sip:127.0.0.1:5999;transport=tls",
				Transport: "tls", Codecs: []string{"PCMU"}, SRTP: policy})
			p := newRegPhone(t, r, "alice", "laptop", "PCMU")
			p.mustRegister("wonderland")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res := c.call(ctx, r.SIPTLSAddr(), "tls", "alice", c.offer("RTP/SAVP", true))
			if res.StatusCode != 200 {
				t.Fatalf("trunk got %d %s", res.StatusCode, res.Reason)
			}
			_, ans, err := sdp.Parse(res.Body())
			if err != nil {
				t.Fatal(err)
			}
			if ans.Proto != "RTP/SAVP" || len(ans.Crypto) != 1 {
				t.Fatalf("answer proto %s with %d crypto lines", ans.Proto, len(ans.Crypto))
			}
			theirs, err := sdp.ParseCrypto(ans.Crypto[0])
			if err != nil {
				t.Fatal(err)
			}
			if theirs.Tag != c.mine.Tag || theirs.Suite != c.mine.Suite {
				t.Fatalf("answer tag %d suite %s, offered tag %d suite %s", theirs.Tag, theirs.Suite, c.mine.Tag, c.mine.Suite)
			}
			if string(theirs.Keys[0].KeySalt) == string(c.mine.Keys[0].KeySalt) {
				t.Fatal("the relay answered with the trunk's own key")
			}
			prof, _ := media.SRTPProfile(theirs.Suite)
			if c.dec, err = srtpContext(prof, theirs.Keys[0].KeySalt); err != nil {
				t.Fatal(err)
			}
			c.remote = netip.AddrPortFrom(ans.Addr, uint16(ans.Port))
			select {
			case <-p.conn:
			case <-ctx.Done():
				t.Fatal("browser leg did not connect")
			}
			if got := c.echoCheck(60); got < 50 {
				t.Fatalf("only %d of 60 SRTP frames came back through the browser", got)
			}
			bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer bcancel()
			if err := c.dcs.Bye(bctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
}

// TestInboundSDESRefused: offers the trunk's policy or transport cannot
// take get 488 and ring no browser.
func TestInboundSDESRefused(t *testing.T) {
	cases := []struct {
		name, transport, policy, proto string
		crypto, allowInsecure          bool
	}{
		{"required without crypto", "tls", mediaplan.SRTPRequired, "RTP/AVP", false, false},
		{"SAVP without crypto", "tls", mediaplan.SRTPOptional, "RTP/SAVP", false, false},
		{"policy off, SAVP", "tls", mediaplan.SRTPOff, "RTP/SAVP", true, false},
		{"udp default policy", "udp", "", "RTP/SAVP", true, false},
		{"udp optional", "udp", mediaplan.SRTPOptional, "RTP/SAVP", true, false},
		{"udp optional AVP with crypto", "udp", mediaplan.SRTPOptional, "RTP/AVP", true, false},
		{"DTLS offer", "tls", mediaplan.SRTPOptional, "UDP/TLS/RTP/SAVP", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pki *testPKI
			addr := "sip:127.0.0.1:5999"
			if tc.transport == "tls" {
				pki = newPKI(t)
				addr += ";transport=tls"
			}
			c := newSDESCaller(t, pki)
			r := sdesInboundRelay(t, pki, config.Trunk{Name: "t", Match: ".*", Address: addr,
				Transport: tc.transport, Codecs: []string{"PCMU"}, SRTP: tc.policy, AllowSDESOverInsecureTransport: tc.allowInsecure})
			p := newRegPhone(t, r, "alice", "laptop", "PCMU")
			p.mustRegister("wonderland")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sipAddr := r.SIPUDPAddr()
			if tc.transport == "tls" {
				sipAddr = r.SIPTLSAddr()
			}
			res := c.call(ctx, sipAddr, tc.transport, "alice", c.offer(tc.proto, tc.crypto))
			if res.StatusCode != 488 {
				t.Fatalf("got %d %s, want 488", res.StatusCode, res.Reason)
			}
			if w := res.GetHeader("Warning"); w == nil || strings.Contains(w.Value(), "inline") {
				t.Fatalf("Warning %v", w)
			}
			if len(p.invites) != 0 {
				t.Fatal("the browser rang")
			}
		})
	}
}

// TestInboundSDESOverUDPAllowed: allow_sdes_over_insecure_transport lets
// SDES through on a UDP trunk.
func TestInboundSDESOverUDPAllowed(t *testing.T) {
	c := newSDESCaller(t, nil)
	r := sdesInboundRelay(t, nil, config.Trunk{Name: "t", Match: ".*", Address: "sip:127.0.0.1:5999",
		Transport: "udp", Codecs: []string{"PCMU"}, SRTP: mediaplan.SRTPOptional, AllowSDESOverInsecureTransport: true})
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := c.call(ctx, r.SIPUDPAddr(), "udp", "alice", c.offer("RTP/AVP", true))
	if res.StatusCode != 200 {
		t.Fatalf("trunk got %d %s", res.StatusCode, res.Reason)
	}
	_, ans, _ := sdp.Parse(res.Body())
	if ans.Proto != "RTP/AVP" || len(ans.Crypto) != 1 {
		t.Fatalf("answer proto %s with %d crypto lines", ans.Proto, len(ans.Crypto))
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	_ = c.dcs.Bye(bctx)
}
