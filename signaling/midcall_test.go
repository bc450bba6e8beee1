package signaling

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// reinvite sends an in-dialog INVITE with the trunk's SDP in direction dir
// (ACKing a 200) and returns the response.
func (u *trunkUAC) reinvite(t *testing.T, dir string, version uint64, hdrs ...sip.Header) *sip.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target := u.dcs.InviteResponse.Contact().Address
	req := sip.NewRequest(sip.INVITE, *target.Clone())
	req.SetBody(u.sdp(version, dir))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	res, err := u.dcs.Do(ctx, req)
	if err != nil {
		t.Fatalf("re-INVITE: %v", err)
	}
	if res.StatusCode == 200 {
		ack := sip.NewRequest(sip.ACK, *target.Clone())
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
		if err := u.dcs.WriteRequest(ack); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	return res
}

func sdpDir(t *testing.T, body []byte) string {
	t.Helper()
	_, a, err := sdp.Parse(body)
	if err != nil {
		t.Fatalf("sdp: %v\n%s", err, body)
	}
	if strings.Contains(string(body), "a=ice-") {
		return firstNonEmpty(a.Direction, "sendrecv") // WebRTC: c= is always 0.0.0.0
	}
	return normDir(a)
}

// answeredCall sets up a trunk → browser call with a short media timeout.
func answeredCall(t *testing.T, mods ...func(*config.Config)) (*Relay, *trunkUAC, *regPhone) {
	t.Helper()
	r, u := inboundRelay(t, append([]func(*config.Config){func(c *config.Config) { c.Media.Timeout = 2 * time.Second }}, mods...)...)
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
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
	if got := u.echoCheck(30); got < 25 {
		t.Fatalf("before hold only %d of 30 frames came back", got)
	}
	return r, u, p
}

func (p *regPhone) lastReinvite() *sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reinv) == 0 {
		return nil
	}
	return p.reinv[len(p.reinv)-1]
}

func TestHoldResumeFromTrunk(t *testing.T) {
	r, u, p := answeredCall(t)
	res := u.reinvite(t, "sendonly", 2)
	if res.StatusCode != 200 || sdpDir(t, res.Body()) != "recvonly" {
		t.Fatalf("hold answered %d %s", res.StatusCode, res.Body())
	}
	waitFor(t, "hold offered to the browser", 5*time.Second, func() bool {
		req := p.lastReinvite()
		return req != nil && strings.Contains(string(req.Body()), "a=sendonly")
	})
	// On hold nothing flows for longer than the media timeout: the call stays.
	time.Sleep(3500 * time.Millisecond)
	if r.ActiveCalls() != 1 {
		t.Fatal("the call ended while on hold (media timeout fired)")
	}
	res = u.reinvite(t, "sendrecv", 3)
	if res.StatusCode != 200 || sdpDir(t, res.Body()) != "sendrecv" {
		t.Fatalf("resume answered %d %s", res.StatusCode, res.Body())
	}
	waitFor(t, "resume offered to the browser", 5*time.Second, func() bool {
		req := p.lastReinvite()
		return req != nil && strings.Contains(string(req.Body()), "a=sendrecv")
	})
	if got := u.echoCheck(40); got < 32 {
		t.Fatalf("after resume only %d of 40 frames came back", got)
	}
	// A resumed call times out again when media stops.
	waitFor(t, "media timeout after resume", 6*time.Second, func() bool { return r.ActiveCalls() == 0 })
}

func TestHoldResumeFromBrowser(t *testing.T) {
	r, u, p := answeredCall(t)
	d := p.dialogs[0]
	pc := p.pcs[0]
	send := func(dir string, ver uint64) *sip.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		target := d.InviteRequest.Contact().Address
		req := sip.NewRequest(sip.INVITE, *target.Clone())
		req.SetBody([]byte(sdp.Rewrite(pc.LocalDescription().SDP, dir, ver, "")))
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res, err := d.Do(ctx, req)
		if err != nil {
			t.Fatalf("browser re-INVITE: %v", err)
		}
		if res.StatusCode == 200 {
			ack := sip.NewRequest(sip.ACK, *target.Clone())
			ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
			_ = d.WriteRequest(ack)
		}
		return res
	}
	res := send("sendonly", 10)
	if res.StatusCode != 200 || sdpDir(t, res.Body()) != "recvonly" {
		t.Fatalf("browser hold answered %d %s", res.StatusCode, res.Body())
	}
	if strings.Contains(string(res.Body()), "a=setup:actpass") {
		t.Fatalf("answer to the browser offers DTLS actpass:\n%s", res.Body())
	}
	waitFor(t, "hold offered to the trunk", 5*time.Second, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.reinv) > 0 && sdpDir(t, u.reinv[len(u.reinv)-1].Body()) == "sendonly"
	})
	time.Sleep(3 * time.Second)
	if r.ActiveCalls() != 1 {
		t.Fatal("the call ended while on hold")
	}
	res = send("sendrecv", 11)
	if res.StatusCode != 200 || sdpDir(t, res.Body()) != "sendrecv" {
		t.Fatalf("browser resume answered %d", res.StatusCode)
	}
	waitFor(t, "resume offered to the trunk", 5*time.Second, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return sdpDir(t, u.reinv[len(u.reinv)-1].Body()) == "sendrecv"
	})
	if got := u.echoCheck(40); got < 32 {
		t.Fatalf("after resume only %d of 40 frames came back", got)
	}
	_ = u.bye()
}

func TestTrunkMovesMediaAddress(t *testing.T) {
	_, u, _ := answeredCall(t)
	// The trunk moves its RTP to a new port with a re-INVITE.
	old := u.rtpConn
	var err error
	u.rtpConn, err = newLoopbackUDP()
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	res := u.reinvite(t, "sendrecv", 5)
	if res.StatusCode != 200 {
		t.Fatalf("re-INVITE: %d", res.StatusCode)
	}
	if got := u.echoCheck(40); got < 32 {
		t.Fatalf("after the move only %d of 40 frames came back", got)
	}
	// Moving to a codec the relay cannot join to the browser's (G.729) is
	// refused and the call goes on.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	target := u.dcs.InviteResponse.Contact().Address
	req := sip.NewRequest(sip.INVITE, *target.Clone())
	body := strings.Replace(string(u.sdp(6, "sendrecv")), "RTP/AVP 0 101", "RTP/AVP 18 101", 1)
	body = strings.Replace(body, "a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000", 1)
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err = u.dcs.Do(ctx, req)
	if err != nil || res.StatusCode != 488 {
		t.Fatalf("codec change: %v %v, want 488", res, err)
	}
	if got := u.echoCheck(20); got < 15 {
		t.Fatalf("after the refused change only %d of 20 frames came back", got)
	}
	_ = u.bye()
}

func TestSessionTimer(t *testing.T) {
	saved := minSE
	minSE = time.Second
	defer func() { minSE = saved }()
	r, u := inboundRelay(t)
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice", sip.NewHeader("Session-Expires", "3;refresher=uac"), sip.NewHeader("Supported", "timer"))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("invite: %v %v", res, err)
	}
	if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "3;refresher=uac" {
		t.Fatalf("200 Session-Expires %v", se)
	}
	if req := res.GetHeader("Require"); req == nil || !strings.Contains(req.Value(), "timer") {
		t.Fatal("200 lacks Require: timer")
	}
	// Refreshes keep the call up past the interval.
	for i := 0; i < 3; i++ {
		time.Sleep(1500 * time.Millisecond)
		res := u.reinvite(t, "sendrecv", uint64(2+i), sip.NewHeader("Session-Expires", "3;refresher=uac"))
		if res.StatusCode != 200 || res.GetHeader("Session-Expires") == nil {
			t.Fatalf("refresh %d: %d", i, res.StatusCode)
		}
	}
	if r.ActiveCalls() != 1 {
		t.Fatal("call ended although refreshed")
	}
	// No more refreshes: the relay ends the call and tells both sides.
	select {
	case <-u.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("no BYE after the session expired")
	}
	select {
	case <-p.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("browser got no BYE after the session expired")
	}
}

func TestSessionTimerTooBrief(t *testing.T) {
	r, u := inboundRelay(t)
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := u.invite(ctx, r, "alice", sip.NewHeader("Session-Expires", "30"))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 422 || res.GetHeader("Min-SE") == nil {
		t.Fatalf("Session-Expires 30: %d, want 422 with Min-SE", res.StatusCode)
	}
}

func newLoopbackUDP() (*net.UDPConn, error) {
	return net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

// holdUAS answers INVITEs with PCMU and echoes RTP; re-INVITEs are
// answered with the mirrored direction and recorded.
type holdUAS struct {
	addr  string
	media *net.UDPConn
	mu    sync.Mutex
	dirs  []string
	dss   *sipgo.DialogServerSession
	dua   *sipgo.DialogUA
	// se, if set, goes into the 200 as Session-Expires.
	se       string
	updates  []*sip.Request
	firstInv *sip.Request
}

func newHoldUAS(t *testing.T, se ...string) *holdUAS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &holdUAS{addr: pc.LocalAddr().String()}
	if len(se) > 0 {
		h.se = se[0]
	}
	h.media, err = newLoopbackUDP()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := h.media.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = h.media.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	srv, _ := sipgo.NewServer(ua)
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	host, port := splitHostPort(h.addr)
	h.dua = &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "pbx", Host: host, Port: port}}}
	body := func(dir string, v uint64) []byte {
		return sdp.Offer{SessionID: 9, Version: v, Addr: netip.MustParseAddr("127.0.0.1"), Port: h.media.LocalAddr().(*net.UDPAddr).Port,
			Direction: dir, Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.DTMF8k}}.Marshal()
	}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		if tag, _ := req.To().Params.Get("tag"); tag != "" {
			_, a, _ := sdp.Parse(req.Body())
			h.mu.Lock()
			h.dirs = append(h.dirs, normDir(a))
			n := len(h.dirs)
			h.mu.Unlock()
			res := sip.NewResponseFromRequest(req, 200, "OK", body(sdp.AnswerDirection(normDir(a)), uint64(1+n)))
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.AppendHeader(sip.HeaderClone(&h.dua.ContactHDR))
			_ = tx.Respond(res)
			return
		}
		d, err := h.dua.ReadInvite(req, tx)
		if err != nil {
			return
		}
		h.mu.Lock()
		h.dss = d
		h.firstInv = req
		se := h.se
		h.mu.Unlock()
		res := sip.NewSDPResponseFromRequest(d.InviteRequest, body("sendrecv", 1))
		if se != "" {
			res.AppendHeader(sip.NewHeader("Session-Expires", se))
			res.AppendHeader(sip.NewHeader("Require", "timer"))
		}
		_ = d.WriteResponse(res)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		h.mu.Lock()
		d := h.dss
		h.mu.Unlock()
		if d != nil {
			_ = d.ReadAck(req, tx)
		}
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnUpdate(func(req *sip.Request, tx sip.ServerTransaction) {
		h.mu.Lock()
		h.updates = append(h.updates, req)
		h.mu.Unlock()
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		if se := req.GetHeader("Session-Expires"); se != nil {
			res.AppendHeader(sip.NewHeader("Session-Expires", se.Value()))
		}
		_ = tx.Respond(res)
	})
	go func() { _ = srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		pc.Close()
		h.media.Close()
		ua.Close()
	})
	return h
}

// TestHoldResumeOutboundCall: on a call from the browser, the browser
// holds and resumes with re-INVITEs; the trunk is offered the same
// directions, nothing times out, and audio flows after the resume.
func TestHoldResumeOutboundCall(t *testing.T) {
	h := newHoldUAS(t)
	r := startRelay(t, func(c *config.Config) {
		c.Media.Timeout = 2 * time.Second
		c.Trunks = []config.Trunk{{Name: "pbx", Match: ".*", Address: "sip:" + h.addr, Codecs: []string{"PCMU"}}}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "2000")
	send := func(dir string, ver uint64) *sip.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		target := p.dcs.InviteResponse.Contact().Address
		req := sip.NewRequest(sip.INVITE, *target.Clone())
		req.SetBody([]byte(sdp.Rewrite(p.pc.LocalDescription().SDP, dir, ver, "")))
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res, err := p.dcs.Do(ctx, req)
		if err != nil {
			t.Fatalf("re-INVITE: %v", err)
		}
		if res.StatusCode == 200 {
			ack := sip.NewRequest(sip.ACK, *target.Clone())
			ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
			_ = p.dcs.WriteRequest(ack)
		}
		return res
	}
	res := send("inactive", 10)
	if res.StatusCode != 200 || sdpDir(t, res.Body()) != "inactive" {
		t.Fatalf("hold answered %d %s", res.StatusCode, res.Body())
	}
	waitFor(t, "hold offered to the trunk", 5*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.dirs) == 1 && h.dirs[0] == "inactive"
	})
	time.Sleep(3 * time.Second)
	if r.ActiveCalls() != 1 {
		t.Fatal("the call ended while on hold")
	}
	if res := send("sendrecv", 11); res.StatusCode != 200 || sdpDir(t, res.Body()) != "sendrecv" {
		t.Fatalf("resume answered %d", res.StatusCode)
	}
	waitFor(t, "resume offered to the trunk", 5*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.dirs) == 2 && h.dirs[1] == "sendrecv"
	})
	sent := p.sendFrames(50, 160)
	got := p.collect(time.Second)
	want := map[string]bool{}
	for _, s := range sent {
		want[string(s)] = true
	}
	matched := 0
	for _, pkt := range got {
		if want[string(pkt.Payload)] {
			matched++
		}
	}
	if matched < 40 {
		t.Fatalf("after resume only %d of 50 frames came back", matched)
	}
	// The trunk (the callee here) holds too: it gets recvonly back.
	h.mu.Lock()
	d := h.dss
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target := d.InviteRequest.Contact().Address
	req := sip.NewRequest(sip.INVITE, *target.Clone())
	req.SetBody(sdp.Offer{SessionID: 9, Version: 10, Addr: netip.MustParseAddr("127.0.0.1"), Port: h.media.LocalAddr().(*net.UDPAddr).Port,
		Direction: "sendonly", Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.DTMF8k}}.Marshal())
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res, err := d.Do(ctx, req)
	if err != nil || res.StatusCode != 200 || sdpDir(t, res.Body()) != "recvonly" {
		t.Fatalf("hold from the trunk: %v %v", res, err)
	}
	ack := sip.NewRequest(sip.ACK, *target.Clone())
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
	_ = d.WriteRequest(ack)
	p.hangup()
}

// TestSessionTimerOutbound: a trunk that answers the relay's INVITE with
// Session-Expires and refresher=uac gets refreshes (UPDATE) from the relay.
func TestSessionTimerOutbound(t *testing.T) {
	h := newHoldUAS(t, "2;refresher=uac")
	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "pbx", Match: ".*", Address: "sip:" + h.addr, Codecs: []string{"PCMU"}}}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "2000")
	h.mu.Lock()
	sup := h.firstInv.GetHeader("Supported")
	h.mu.Unlock()
	if sup == nil || !strings.Contains(sup.Value(), "timer") {
		t.Fatalf("INVITE to the trunk lacks Supported: timer")
	}
	waitFor(t, "two refreshes", 4*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.updates) >= 2
	})
	h.mu.Lock()
	se := h.updates[0].GetHeader("Session-Expires")
	h.mu.Unlock()
	if se == nil || se.Value() != "2;refresher=uac" {
		t.Fatalf("refresh Session-Expires %v", se)
	}
	if r.ActiveCalls() != 1 {
		t.Fatal("call ended")
	}
	p.hangup()
}

// TestOfferWhileRelayOffersOtherSide: the trunk holds and at once resumes
// while the relay's re-INVITE carrying the hold to the browser is still
// unanswered. That is no glare (the relay's offer is on the other
// dialog): the resume is answered 200, not 491, and both offers reach the
// browser in order.
func TestOfferWhileRelayOffersOtherSide(t *testing.T) {
	_, u, p := answeredCall(t, func(c *config.Config) { c.Media.Timeout = 30 * time.Second })
	p.set(func(p *regPhone) { p.reDelay = time.Second })
	if res := u.reinvite(t, "sendonly", 2); res.StatusCode != 200 {
		t.Fatalf("hold: %d", res.StatusCode)
	}
	waitFor(t, "the hold offered to the browser", 5*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.reinv) == 1
	})
	if res := u.reinvite(t, "sendrecv", 3); res.StatusCode != 200 {
		t.Fatalf("resume while the relay's hold offer to the browser is pending: %d", res.StatusCode)
	}
	waitFor(t, "the resume offered to the browser", 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.reinv) == 2
	})
	p.mu.Lock()
	last := p.reinv[1]
	p.mu.Unlock()
	if d := sdpDir(t, last.Body()); d != "sendrecv" {
		t.Fatalf("the browser's last offer says %s", d)
	}
	p.set(func(p *regPhone) { p.reDelay = 0 })
	if got := u.echoCheck(30); got < 24 {
		t.Fatalf("after resume only %d of 30 frames came back", got)
	}
}
