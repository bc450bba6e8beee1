package signaling

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/digest"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// trunkUAC is a carrier stand-in that places calls into the relay over UDP
// and sends and receives RTP.
type trunkUAC struct {
	t    *testing.T
	addr string // its SIP address (Contact)
	ua   *sipgo.UserAgent
	cli  *sipgo.Client
	dua  *sipgo.DialogUA

	mu       sync.Mutex
	dcs      *sipgo.DialogClientSession
	reinv    []*sip.Request
	notifys  []string
	infos    []string
	fromUser string // caller number in From; default +15557654321
	byes     chan struct{}
	rtpConn  *net.UDPConn
	remote   netip.AddrPort
	pt       uint8 // audio payload type it sends: PCMU (0) unless it moved the call to another codec
}

func newTrunkUAC(t *testing.T) *trunkUAC {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &trunkUAC{t: t, addr: pc.LocalAddr().String(), byes: make(chan struct{}, 4)}
	u.ua, _ = sipgo.NewUA(sipgo.WithUserAgent("carrier"), sipgo.WithUserAgentHostname("127.0.0.1"))
	srv, _ := sipgo.NewServer(u.ua)
	u.cli, _ = sipgo.NewClient(u.ua, sipgo.WithClientHostname("127.0.0.1"))
	host, port := splitHostPort(u.addr)
	u.dua = &sipgo.DialogUA{Client: u.cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "carrier", Host: host, Port: port}}}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		u.mu.Lock()
		d := u.dcs
		u.mu.Unlock()
		if d != nil {
			_ = d.ReadBye(req, tx)
		} else {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
		u.byes <- struct{}{}
	})
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		// re-INVITE from the relay: answer with the mirrored direction.
		u.mu.Lock()
		u.reinv = append(u.reinv, req)
		n := len(u.reinv)
		u.mu.Unlock()
		_, a, _ := sdp.Parse(req.Body())
		body := u.sdp(uint64(100+n), sdp.AnswerDirection(normDir(a)))
		res := sip.NewResponseFromRequest(req, 200, "OK", body)
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.HeaderClone(&u.dua.ContactHDR))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {})
	srv.OnInfo(func(req *sip.Request, tx sip.ServerTransaction) {
		u.mu.Lock()
		u.infos = append(u.infos, string(req.Body()))
		u.mu.Unlock()
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		u.mu.Lock()
		u.notifys = append(u.notifys, strings.TrimSpace(string(req.Body())))
		u.mu.Unlock()
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = srv.ServeUDP(pc) }()
	u.rtpConn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pc.Close()
		u.rtpConn.Close()
		u.ua.Close()
	})
	return u
}

func (u *trunkUAC) sdp(version uint64, dir string) []byte {
	return sdp.Offer{SessionID: 77, Version: version, Addr: netip.MustParseAddr("127.0.0.1"),
		Port: u.rtpConn.LocalAddr().(*net.UDPAddr).Port, Direction: dir,
		Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.DTMF8k}}.Marshal()
}

// withCarrier configures a trunk for the trunkUAC (identified by its
// address 127.0.0.1).
func withCarrier(u *trunkUAC) func(*config.Config) {
	return func(c *config.Config) {
		c.Trunks = append(c.Trunks, config.Trunk{Name: "carrier", Match: "^9", Address: "sip:" + u.addr, Transport: "udp", Codecs: []string{"PCMU", "PCMA", "opus"}})
	}
}

// invite calls user at the relay; it returns the final response (the
// dialog is kept when it is a 200, which is ACKed).
func (u *trunkUAC) invite(ctx context.Context, r *Relay, user string, hdrs ...sip.Header) (*sip.Response, error) {
	host, port := splitHostPort(r.SIPUDPAddr().String())
	hdrs = append(hdrs, sip.NewHeader("Content-Type", "application/sdp"))
	from := &sip.FromHeader{DisplayName: "Carol Caller", Address: sip.Uri{User: firstNonEmpty(u.fromUser, "+15557654321"), Host: "carrier.example"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	hdrs = append(hdrs, from)
	dcs, err := u.dua.Invite(ctx, sip.Uri{User: user, Host: host, Port: port}, u.sdp(1, "sendrecv"), hdrs...)
	if err != nil {
		return nil, err
	}
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var dr *sipgo.ErrDialogResponse
	if errors.As(err, &dr) {
		return dr.Res, nil
	}
	if err != nil {
		return nil, err
	}
	if err := dcs.Ack(ctx); err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.dcs = dcs
	u.mu.Unlock()
	_, a, err := sdp.Parse(dcs.InviteResponse.Body())
	if err != nil {
		return nil, err
	}
	u.remote = netip.AddrPortFrom(a.Addr, uint16(a.Port))
	return dcs.InviteResponse, nil
}

// echoCheck sends n PCMU frames to the relay and counts those that come
// back unchanged (the browser echoes them).
func (u *trunkUAC) echoCheck(n int) int {
	got := make(chan string, n*2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_ = u.rtpConn.SetReadDeadline(time.Now().Add(time.Second))
			k, err := u.rtpConn.Read(buf)
			if err != nil {
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:k]) == nil {
				got <- string(p.Payload)
			}
		}
	}()
	seq := uint16(time.Now().UnixNano())
	sent := map[string]bool{}
	for i := 0; i < n; i++ {
		payload := make([]byte, 160)
		copy(payload, fmt.Sprintf("pcmu-%d-%04d", seq, i))
		sent[string(payload)] = true
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: u.pt, SequenceNumber: seq + uint16(i), Timestamp: uint32(i * 160), SSRC: 99}, Payload: payload}
		b, _ := pkt.Marshal()
		_, _ = u.rtpConn.WriteToUDPAddrPort(b, u.remote)
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

func (u *trunkUAC) bye() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return u.dcs.Bye(ctx)
}

func inboundRelay(t *testing.T, mods ...func(*config.Config)) (*Relay, *trunkUAC) {
	u := newTrunkUAC(t)
	r := startRelay(t, chain(append([]func(*config.Config){withUsers("alice", "wonderland", "bob", "builder"), withCarrier(u)}, mods...)...))
	return r, u
}

func TestInboundCallToRegisteredBrowser(t *testing.T) {
	r, u := inboundRelay(t, func(c *config.Config) { c.Users[0].DIDs = []string{"+1 555 010 2000"} })
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The DID rings alice.
	res, err := u.invite(ctx, r, "+15550102000")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("trunk got %d %s", res.StatusCode, res.Reason)
	}
	inv := p.invites[0]
	if f := inv.From(); f.Address.User != "+15557654321" || f.DisplayName != "Carol Caller" {
		t.Fatalf("browser sees caller %q <%s>", f.DisplayName, f.Address.User)
	}
	if strings.Contains(inv.String(), "carrier.example") || strings.Contains(inv.String(), u.addr) {
		t.Fatalf("trunk details leaked to the browser:\n%s", inv)
	}
	select {
	case <-p.conn:
	case <-ctx.Done():
		t.Fatal("browser leg did not connect")
	}
	if got := u.echoCheck(60); got < 50 {
		t.Fatalf("only %d of 60 frames came back through the browser", got)
	}
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("browser never got the BYE")
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	waitFor(t, "cdr", 5*time.Second, func() bool {
		n, _ := r.CDR().Count(context.Background())
		return n == 1
	})
}

func TestInboundTranscodeOpusBrowser(t *testing.T) {
	r, u := inboundRelay(t)
	p := newRegPhone(t, r, "alice", "laptop", "opus")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("invite: %v %v", res, err)
	}
	select {
	case <-p.conn:
	case <-ctx.Done():
		t.Fatal("browser leg did not connect")
	}
	// Opus on the browser leg, PCMU on the trunk's: frames are
	// transcoded both ways, so count packets rather than compare bytes.
	p.set(func(p *regPhone) { p.rxCount = 0 })
	u.echoCheck(25)
	p.mu.Lock()
	n := p.rxCount
	p.mu.Unlock()
	if n < 15 {
		t.Fatalf("browser received %d opus packets", n)
	}
	_ = u.bye()
}

func TestInboundRejections(t *testing.T) {
	r, u := inboundRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		user string
		want int
	}{
		{"nobody", 404}, // not a user
		{"alice", 480},  // nobody registered
	} {
		res, err := u.invite(ctx, r, tc.user)
		if err != nil {
			t.Fatal(err)
		}
		if int(res.StatusCode) != tc.want {
			t.Fatalf("INVITE to %s: %d, want %d", tc.user, res.StatusCode, tc.want)
		}
	}
	for _, code := range []int{486, 603} {
		p := newRegPhone(t, r, "bob", fmt.Sprint("dev", code))
		p.set(func(p *regPhone) { p.code = code })
		p.mustRegister("builder")
		res, err := u.invite(ctx, r, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if int(res.StatusCode) != code {
			t.Fatalf("browser said %d, trunk got %d", code, res.StatusCode)
		}
		_ = p.register("builder", 0, false)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestInboundUnknownSource(t *testing.T) {
	u := newTrunkUAC(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "elsewhere", Match: "^9", Address: "sip:" + u.addr, Sources: []string{"192.0.2.0/24"}}}
	}))
	p := newRegPhone(t, r, "alice", "laptop")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 403 {
		t.Fatalf("INVITE from an unknown source: %d, want 403", res.StatusCode)
	}
	if n := sumCounter(t, r.inb.rejected, "reason", "unknown_source"); n != 1 {
		t.Fatalf("unknown-source counter %d, want 1", n)
	}
	if len(p.invites) != 0 {
		t.Fatal("the browser rang")
	}
}

func TestInboundTrunkDigestAuth(t *testing.T) {
	u := newTrunkUAC(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "authed", Match: "^9", Address: "sip:" + u.addr, Sources: []string{"192.0.2.1"},
			InboundUsername: "carrier", InboundPassword: "s3cret"}}
	}))
	p := newRegPhone(t, r, "alice", "laptop")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host, port := splitHostPort(r.SIPUDPAddr().String())
	dcs, err := u.dua.Invite(ctx, sip.Uri{User: "alice", Host: host, Port: port}, u.sdp(1, "sendrecv"), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dcs.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "carrier", Password: "s3cret"}); err != nil {
		t.Fatalf("authenticated INVITE: %v", err)
	}
	_ = dcs.Ack(ctx)
	u.dcs = dcs
	_ = u.bye()
	// Wrong password: 403.
	dcs, err = u.dua.Invite(ctx, sip.Uri{User: "alice", Host: host, Port: port}, u.sdp(1, "sendrecv"), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "carrier", Password: "wrong"})
	var dr *sipgo.ErrDialogResponse
	if !errors.As(err, &dr) || dr.Res.StatusCode != 403 {
		t.Fatalf("wrong trunk password: %v, want 403", err)
	}
}

func TestInboundCancelWhileRinging(t *testing.T) {
	r, u := inboundRelay(t)
	p := newRegPhone(t, r, "alice", "laptop")
	p.set(func(p *regPhone) { p.never = true })
	p.mustRegister("wonderland")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-p.ringing
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	_, err := u.invite(ctx, r, "alice")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled INVITE returned %v", err)
	}
	waitFor(t, "CANCEL at the browser", 5*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.cancels) == 1
	})
	p.mu.Lock()
	reason := p.cancels[0].GetHeader("Reason")
	p.mu.Unlock()
	if reason == nil || !strings.Contains(reason.Value(), "cause=487") {
		t.Fatalf("CANCEL Reason %v", reason)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestInboundForkFirstAnswerWins(t *testing.T) {
	r, u := inboundRelay(t)
	slow := newRegPhone(t, r, "alice", "desk")
	slow.set(func(p *regPhone) { p.never = true })
	slow.mustRegister("wonderland")
	fast := newRegPhone(t, r, "alice", "laptop")
	fast.set(func(p *regPhone) { p.delay = 300 * time.Millisecond })
	fast.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("invite: %v %v", res, err)
	}
	waitFor(t, "CANCEL at the other device", 5*time.Second, func() bool {
		slow.mu.Lock()
		defer slow.mu.Unlock()
		return len(slow.cancels) == 1
	})
	slow.mu.Lock()
	reason := slow.cancels[0].GetHeader("Reason")
	slow.mu.Unlock()
	if reason == nil || !strings.Contains(reason.Value(), "cause=200") || !strings.Contains(reason.Value(), "elsewhere") {
		t.Fatalf("CANCEL Reason %v", reason)
	}
	select {
	case <-fast.conn:
	case <-ctx.Done():
		t.Fatal("winning browser did not connect")
	}
	if got := u.echoCheck(40); got < 30 {
		t.Fatalf("only %d of 40 frames came back", got)
	}
	_ = u.bye()
}

// TestOutboundDigestAuth checks that a trunk's 407 and 401 challenges to
// the relay's INVITE are answered with the trunk's credentials.
func TestOutboundDigestAuth(t *testing.T) {
	for _, code := range []int{407, 401} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			u := newTrunkUAS(t)
			creds := digest.NewCredentials("carrier")
			creds.AddPassword("acct42", "s3cret")
			nonces := digest.NewNonces()
			var challenged, authed int
			var mu sync.Mutex
			authHdr, chalHdr := "Proxy-Authorization", "Proxy-Authenticate"
			if code == 401 {
				authHdr, chalHdr = "Authorization", "WWW-Authenticate"
			}
			// The challenging front: its own socket, handing authenticated
			// INVITEs to the trunk stand-in (whose Contact takes the dialog).
			front, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer front.Close()
			fua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
			defer fua.Close()
			fsrv, _ := sipgo.NewServer(fua)
			fsrv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
				if h := req.GetHeader(authHdr); h != nil {
					if res, _ := creds.Verify(nonces, h.Value(), "INVITE", "127.0.0.1", time.Now()); res == digest.OK {
						mu.Lock()
						authed++
						mu.Unlock()
						u.onInvite(req, tx)
						return
					}
				}
				mu.Lock()
				challenged++
				mu.Unlock()
				res := sip.NewResponseFromRequest(req, code, "Auth", nil)
				res.AppendHeader(sip.NewHeader(chalHdr, digest.Challenges("carrier", nonces.Make("127.0.0.1", time.Now()), false)[1]))
				_ = tx.Respond(res)
			})
			go func() { _ = fsrv.ServeUDP(front) }()
			r := startRelay(t, func(c *config.Config) {
				c.Trunks = []config.Trunk{{Name: "carrier", Match: ".*", Address: "sip:" + front.LocalAddr().String(), Codecs: []string{"PCMU"}, Username: "acct42", Password: "s3cret"}}
			})
			p := newPhone(t, "PCMU")
			p.call(r, "15550001111")
			mu.Lock()
			if challenged != 1 || authed != 1 {
				t.Fatalf("challenged %d, authenticated %d", challenged, authed)
			}
			mu.Unlock()
			p.hangup()
		})
	}
}

// TestInboundSRTPOfferRefused: an RTP/SAVP offer from a trunk whose SRTP
// policy is off (the default) gets 488 rather than a plain RTP answer it
// cannot use. SDES under optional/required: sdes_inbound_test.go.
func TestInboundSRTPOfferRefused(t *testing.T) {
	r, u := inboundRelay(t)
	p := newRegPhone(t, r, "alice", "laptop")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host, port := splitHostPort(r.SIPUDPAddr().String())
	body := strings.Replace(string(u.sdp(1, "sendrecv")), "RTP/AVP", "RTP/SAVP", 1) +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
	dcs, err := u.dua.Invite(ctx, sip.Uri{User: "alice", Host: host, Port: port}, []byte(body), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var dr *sipgo.ErrDialogResponse
	if !errors.As(err, &dr) || dr.Res.StatusCode != 488 {
		t.Fatalf("SRTP offer: %v, want 488", err)
	}
	if len(p.invites) != 0 {
		t.Fatal("the browser rang")
	}
}

// TestInboundLateOffer: a trunk INVITE without SDP gets the relay's offer
// in the 200 and answers in the ACK; audio then flows.
func TestInboundLateOffer(t *testing.T) {
	r, u := inboundRelay(t)
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host, port := splitHostPort(r.SIPUDPAddr().String())
	dcs, err := u.dua.Invite(ctx, sip.Uri{User: "alice", Host: host, Port: port}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dcs.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("late-offer INVITE: %v", err)
	}
	_, offer, err := sdp.Parse(dcs.InviteResponse.Body())
	if err != nil {
		t.Fatalf("200 carries no offer: %v", err)
	}
	if _, ok := offer.Find("PCMU"); !ok {
		t.Fatalf("relay offered %v", offer.Codecs)
	}
	ack := sip.NewRequest(sip.ACK, dcs.InviteResponse.Contact().Address)
	ack.SetBody(u.sdp(1, "sendrecv"))
	ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if err := dcs.WriteAck(ctx, ack); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	u.dcs = dcs
	u.mu.Unlock()
	u.remote = netip.AddrPortFrom(offer.Addr, uint16(offer.Port))
	select {
	case <-p.conn:
	case <-ctx.Done():
		t.Fatal("browser leg did not connect")
	}
	if got := u.echoCheck(40); got < 32 {
		t.Fatalf("only %d of 40 frames came back", got)
	}
	_ = u.bye()
}
