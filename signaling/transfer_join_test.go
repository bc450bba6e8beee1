package signaling

import (
	"context"
	"database/sql"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/join"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// sendRefer sends REFER with Refer-To to target, the far end of the
// dialog whose Do is do, and returns the response.
func sendRefer(t *testing.T, target sip.Uri, do func(context.Context, *sip.Request) (*sip.Response, error), referTo string) *sip.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := sip.NewRequest(sip.REFER, *target.Clone())
	req.AppendHeader(sip.NewHeader("Refer-To", referTo))
	res, err := do(ctx, req)
	if err != nil {
		t.Fatalf("REFER: %v", err)
	}
	return res
}

// browserRefer sends REFER on a dialog the browser (or a trunk) answered.
func browserRefer(t *testing.T, d *sipgo.DialogServerSession, referTo string) *sip.Response {
	t.Helper()
	return sendRefer(t, d.InviteRequest.Contact().Address, d.Do, referTo)
}

// withTarget routes numbers starting with 7 to a trunkUAS.
func withTarget(u *trunkUAS) func(*config.Config) {
	return func(c *config.Config) {
		c.Media.Timeout = 30 * time.Second
		c.Trunks = append([]config.Trunk{{Name: "target", Match: "^7", Address: "sip:" + u.addr, Codecs: []string{"PCMU"}}}, c.Trunks...)
	}
}

func waitNotifys(t *testing.T, p *regPhone, n int) string {
	t.Helper()
	waitFor(t, "NOTIFYs", 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.notifys) >= n
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.notifys, " | ")
}

// cdrDirections reads (direction, end_cause) of every CDR row, oldest first.
func cdrRows(t *testing.T, r *Relay, n int) [][2]string {
	t.Helper()
	waitFor(t, "cdr rows", 10*time.Second, func() bool {
		got, _ := r.CDR().Count(context.Background())
		return got == n
	})
	db, err := sql.Open("sqlite", "file:"+r.cfg.CDR.Path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT direction, end_cause FROM cdr WHERE end_cause != 'in_progress' ORDER BY end_time`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var d, c string
		if err := rows.Scan(&d, &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]string{d, c})
	}
	return out
}

// TestBrowserTransfersToTrunk: the browser that took a trunk's call
// transfers the caller to a number that routes to another trunk. The relay
// calls it, joins the two trunk legs and hangs up on the browser; the
// caller then talks to the new trunk (which echoes).
func TestBrowserTransfersToTrunk(t *testing.T) {
	target := newTrunkUAS(t)
	r, u, alice := answeredCall(t, withTarget(target))
	alice.mu.Lock()
	d := alice.dialogs[0]
	alice.mu.Unlock()
	if res := browserRefer(t, d, "<sip:7001@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	waitChan(t, "the transfer target's INVITE", target.answered)
	waitChan(t, "a BYE to the transferring browser", alice.byes)
	if notes := waitNotifys(t, alice, 2); notes != "SIP/2.0 100 Trying | SIP/2.0 200 OK" {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	inv := target.lastInvite()
	if from := inv.From().Address.User; from != "+15557654321" {
		t.Fatalf("target sees caller %q, want the transferred trunk party", from)
	}
	if strings.Contains(inv.String(), u.addr) || strings.Contains(inv.String(), "carrier.example") {
		t.Fatalf("the first trunk's details leaked to the target:\n%s", inv)
	}
	sipIn := `leg="sip",dir="in"`
	before := metricValue(metricsText(t, r), "mediarelay_packets_total", sipIn)
	got := u.echoCheck(50)
	if got < 40 {
		t.Fatalf("after the transfer only %d of 50 frames came back from the new trunk", got)
	}
	// The joined call's packets count while it is up, not only at its
	// end: both legs received the frames (caller's, then target's echo).
	if live := metricValue(metricsText(t, r), "mediarelay_packets_total", sipIn); live < before+float64(2*got) {
		t.Errorf("mid-join mediarelay_packets_total{%s} went from %v to %v, want at least %d more", sipIn, before, live, 2*got)
	}
	if n := r.ActiveCalls(); n != 1 {
		t.Fatalf("%d active calls, want 1 (the joined trunk legs)", n)
	}
	// Hold and resume from the caller's side reach the target.
	if res := u.reinvite(t, "sendonly", 2); res.StatusCode != 200 || sdpDir(t, res.Body()) != "recvonly" {
		t.Fatalf("hold in a joined call: %d %s", res.StatusCode, res.Body())
	}
	if res := u.reinvite(t, "sendrecv", 3); res.StatusCode != 200 {
		t.Fatalf("resume: %d", res.StatusCode)
	}
	if got := u.echoCheck(30); got < 24 {
		t.Fatalf("after resume only %d of 30 frames came back", got)
	}
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "a BYE to the target after the caller hung up", target.byes)
	rows := cdrRows(t, r, 2)
	if rows[0] != [2]string{"inbound", cdr.CauseTransferred} || rows[1] != [2]string{join.Direction, cdr.CauseNormalTrunk} {
		t.Fatalf("CDR rows %v", rows)
	}
	waitFor(t, "ports released", 5*time.Second, func() bool { return r.PortsInUse() == 0 })
}

// TestBrowserTransferToUnreachableTrunk: the target says busy; the browser
// hears 486 in the NOTIFY and its call goes on.
func TestBrowserTransferToBusyTrunk(t *testing.T) {
	target := newTrunkUAS(t)
	target.code = 486
	r, u, alice := answeredCall(t, withTarget(target))
	alice.mu.Lock()
	d := alice.dialogs[0]
	alice.mu.Unlock()
	if res := browserRefer(t, d, "<sip:7001@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	if notes := waitNotifys(t, alice, 2); notes != "SIP/2.0 100 Trying | SIP/2.0 486 Trunk Says No" {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	if got := u.echoCheck(30); got < 24 {
		t.Fatalf("after the failed transfer only %d of 30 frames came back", got)
	}
	if r.PortsInUse() != 1 {
		t.Fatalf("%d port pairs in use, want the call's one", r.PortsInUse())
	}
	// Nobody and nothing routable: declined at once.
	if res := browserRefer(t, d, "<sip:nobody@127.0.0.1>"); res.StatusCode != 603 {
		t.Fatalf("REFER to an unroutable target: %d", res.StatusCode)
	}
}

// replacesParam is the Refer-To form of a Replaces naming dialog d the way
// JsSIP writes it (RTCSession/ReferSubscriber.js): to-tag and from-tag are
// the tags of the dialog's INVITE, so for a call the browser answered
// to-tag is the browser's own tag.
func replacesParam(d *sipgo.DialogServerSession) string {
	relayTag, _ := d.InviteRequest.From().Params.Get("tag")
	myTag, _ := d.InviteResponse.To().Params.Get("tag")
	v := d.InviteRequest.CallID().Value() + ";to-tag=" + myTag + ";from-tag=" + relayTag
	return url.QueryEscape(v)
}

// TestBrowserAttendedTransfer: a browser has a call from one trunk party
// and a consultation call with another, and connects the two with REFER
// and Replaces. Both browser legs end; the trunk parties talk.
func TestBrowserAttendedTransfer(t *testing.T) {
	u2 := newTrunkUAC(t)
	u2.fromUser = "+15550001111"
	r, u, alice := answeredCall(t, func(c *config.Config) {
		c.Media.Timeout = 30 * time.Second
		c.Trunks = append(c.Trunks, config.Trunk{Name: "carrier2", Match: "^8", Address: "sip:" + u2.addr, Transport: "udp", Codecs: []string{"PCMU"}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if res, err := u2.invite(ctx, r, "alice"); err != nil || res.StatusCode != 200 {
		t.Fatalf("consultation call: %v %v", res, err)
	}
	waitChan(t, "the consultation call's browser leg to connect", alice.conn)
	alice.mu.Lock()
	first, consult := alice.dialogs[0], alice.dialogs[1]
	alice.mu.Unlock()

	// A Replaces naming no call of the relay's: 481 in the NOTIFY.
	if res := browserRefer(t, first, "<sip:8000@127.0.0.1?Replaces=nosuch%3Bto-tag%3D1%3Bfrom-tag%3D2>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	if notes := waitNotifys(t, alice, 2); !strings.HasSuffix(notes, "SIP/2.0 481 Call/Transaction Does Not Exist") {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	// A malformed one is refused at once.
	if res := browserRefer(t, first, "<sip:8000@127.0.0.1?Replaces=justacallid>"); res.StatusCode != 400 {
		t.Fatalf("malformed Replaces: %d", res.StatusCode)
	}

	if res := browserRefer(t, first, "<sip:8000@127.0.0.1?Replaces="+replacesParam(consult)+">"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-alice.byes:
		case <-time.After(10 * time.Second):
			t.Fatalf("browser got %d BYEs, want one per call", i)
		}
	}
	if notes := waitNotifys(t, alice, 4); !strings.HasSuffix(notes, "SIP/2.0 100 Trying | SIP/2.0 200 OK") {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	// u2 echoes what it gets, so u hears itself through u2.
	stop := echoUDP(u2.rtpConn)
	defer stop()
	if got := u.echoCheck(50); got < 40 {
		t.Fatalf("after the attended transfer only %d of 50 frames came back through the other trunk party", got)
	}
	if n := r.ActiveCalls(); n != 1 {
		t.Fatalf("%d active calls, want 1", n)
	}
	if err := u2.bye(); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "a BYE to the first trunk party after the other hung up", u.byes)
	rows := cdrRows(t, r, 3)
	if rows[2] != [2]string{join.Direction, cdr.CauseNormalTrunk} {
		t.Fatalf("CDR rows %v", rows)
	}
	waitFor(t, "ports released", 5*time.Second, func() bool { return r.PortsInUse() == 0 })
}

// echoUDP sends every datagram on c back where it came from until stop.
func echoUDP(c *net.UDPConn) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		buf := make([]byte, 1500)
		for {
			select {
			case <-done:
				return
			default:
			}
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				continue
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return func() { close(done); <-finished }
}

// TestTrunkReferWithReplaces: a PBX user who consulted someone inside the
// PBX completes the transfer with REFER and Replaces; the relay's INVITE
// to the target carries the Replaces so the PBX can swap its own call.
func TestTrunkReferWithReplaces(t *testing.T) {
	target := newTrunkUAS(t)
	_, u, _ := answeredCall(t, withTarget(target))
	res := u.refer(t, "<sip:7001@127.0.0.1?Replaces=consult%40pbx%3Bto-tag%3Daaa%3Bfrom-tag%3Dbbb>")
	if res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	waitChan(t, "the transfer target's INVITE", target.answered)
	h := target.lastInvite().GetHeader("Replaces")
	if h == nil || h.Value() != "consult@pbx;to-tag=aaa;from-tag=bbb" {
		t.Fatalf("INVITE to the target carries Replaces %v", h)
	}
	waitChan(t, "a BYE to the transferring trunk leg", u.byes)
}

// TestInviteWithReplaces: a new trunk dialog takes over a call's trunk leg
// (RFC 3891), as when a PBX phone completes an attended transfer by
// calling the relay. The browser stays; the old dialog gets BYE.
func TestInviteWithReplaces(t *testing.T) {
	u2 := newTrunkUAC(t)
	r, u, _ := answeredCall(t, func(c *config.Config) {
		c.Media.Timeout = 30 * time.Second
		c.Trunks = append(c.Trunks, config.Trunk{Name: "pbx", Match: "^8", Address: "sip:" + u2.addr, Transport: "udp", Codecs: []string{"PCMU"}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Unknown dialog: 481.
	res, err := u2.invite(ctx, r, "alice", sip.NewHeader("Replaces", "nosuch;to-tag=1;from-tag=2"))
	if err != nil || res.StatusCode != 481 {
		t.Fatalf("INVITE replacing nothing: %v %v", res, err)
	}
	// u's dialog as the relay sees it: to-tag is the relay's, from-tag u's.
	u.mu.Lock()
	dcs := u.dcs
	u.mu.Unlock()
	relayTag, _ := dcs.InviteResponse.To().Params.Get("tag")
	uTag, _ := dcs.InviteRequest.From().Params.Get("tag")
	rep := dcs.InviteRequest.CallID().Value() + ";to-tag=" + relayTag + ";from-tag=" + uTag
	if res, err := u2.invite(ctx, r, "alice", sip.NewHeader("Replaces", rep+";early-only")); err != nil || res.StatusCode != 486 {
		t.Fatalf("early-only Replaces of a confirmed dialog: %v %v", res, err)
	}
	res, err = u2.invite(ctx, r, "alice", sip.NewHeader("Replaces", rep))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("INVITE with Replaces: %v %v", res, err)
	}
	waitChan(t, "a BYE on the replaced dialog", u.byes)
	if got := u2.echoCheck(50); got < 40 {
		t.Fatalf("the replacing party got only %d of 50 frames back from the browser", got)
	}
	if n := r.ActiveCalls(); n != 1 {
		t.Fatalf("%d active calls, want 1", n)
	}
	// Mid-call requests now go to the new dialog: hold works.
	if res := u2.reinvite(t, "sendonly", 2); res.StatusCode != 200 {
		t.Fatalf("hold on the replacing dialog: %d", res.StatusCode)
	}
	if err := u2.bye(); err != nil {
		t.Fatal(err)
	}
	if cause, _ := lastEnd(t, r, 1); cause != cdr.CauseNormalTrunk {
		t.Fatalf("end cause %q", cause)
	}
}

// joinedCall is TestBrowserTransfersToTrunk's set-up: a trunk's call to a
// browser, transferred by the browser to the target trunk.
func joinedCall(t *testing.T, target *trunkUAS) (*Relay, *trunkUAC) {
	t.Helper()
	r, u, alice := answeredCall(t, withTarget(target))
	alice.mu.Lock()
	d := alice.dialogs[0]
	alice.mu.Unlock()
	if res := browserRefer(t, d, "<sip:7001@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	if notes := waitNotifys(t, alice, 2); !strings.HasSuffix(notes, "200 OK") {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	<-target.answered
	return r, u
}

// TestJoinSessionTimer: a trunk leg of a join that asks for a session
// timer and then never refreshes ends the joined call, on both legs.
func TestJoinSessionTimer(t *testing.T) {
	target := newTrunkUAS(t)
	r, u := joinedCall(t, target)
	if res := u.reinvite(t, "sendrecv", 2, sip.NewHeader("Session-Expires", "2;refresher=uac")); res.StatusCode != 200 {
		t.Fatalf("re-INVITE with a session timer: %d", res.StatusCode)
	} else if h := res.GetHeader("Session-Expires"); h == nil || h.Value() != "2;refresher=uac" {
		t.Fatalf("2xx Session-Expires %v", h)
	}
	for name, ch := range map[string]chan struct{}{"caller": u.byes, "target": target.byes} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s got no BYE when the session expired", name)
		}
	}
	if cause, _ := lastEnd(t, r, 2); cause != cdr.CauseSessionExpired {
		t.Fatalf("join ended with %q", cause)
	}
}

// TestJoinReferAgain: a trunk in a joined call transfers its peer on; the
// relay calls the new target and swaps it in for the referring leg.
func TestJoinReferAgain(t *testing.T) {
	target := newTrunkUAS(t)
	r, u := joinedCall(t, target)
	target.bookMu.Lock()
	first := target.dialogs[0]
	target.bookMu.Unlock()
	if res := browserRefer(t, first, "<sip:7002@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER in a join: %v", res)
	}
	waitChan(t, "the second target's INVITE", target.answered)
	waitChan(t, "a BYE to the referring leg", target.byes) // the referring dialog is hung up
	if got := u.echoCheck(50); got < 40 {
		t.Fatalf("after the second transfer only %d of 50 frames came back", got)
	}
	if n := r.ActiveCalls(); n != 1 {
		t.Fatalf("%d active calls", n)
	}
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "a BYE to the second target", target.byes)
	waitFor(t, "ports released", 5*time.Second, func() bool { return r.PortsInUse() == 0 })
}

// TestJoinCodecChange: a joined trunk leg moves from PCMU to PCMA; the
// join converts between the laws, and its tones still come back through
// the other (PCMU, echoing) leg. A codec neither leg can be joined to is
// refused and the call goes on.
func TestJoinCodecChange(t *testing.T) {
	target := newTrunkUAS(t)
	target.setCapture(make(chan []byte, 4000))
	_, u := joinedCall(t, target)
	body := strings.Replace(string(u.sdp(2, "sendrecv")), "RTP/AVP 0 101", "RTP/AVP 8 101", 1)
	body = strings.Replace(body, "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", 1)
	g729 := strings.Replace(string(u.sdp(3, "sendrecv")), "RTP/AVP 0 101", "RTP/AVP 18 101", 1)
	g729 = strings.Replace(g729, "a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000", 1)
	reoffer := func(b string) *sip.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := sip.NewRequest(sip.UPDATE, *u.dcs.InviteResponse.Contact().Address.Clone())
		req.SetBody([]byte(b))
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res, err := u.dcs.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := reoffer(body)
	if res.StatusCode != 200 || !strings.Contains(string(res.Body()), "a=rtpmap:8 PCMA/8000") || strings.Contains(string(res.Body()), "PCMU") {
		t.Fatalf("UPDATE to PCMA: %d\n%s", res.StatusCode, res.Body())
	}
	u.pt = 8
	if !u.tonesBack(t) {
		t.Fatal("the PCMA leg's tones did not come back through the PCMU leg")
	}
	if res := reoffer(g729); res.StatusCode != 488 {
		t.Fatalf("UPDATE to G.729 answered %d", res.StatusCode)
	}
	if !u.tonesBack(t) {
		t.Fatal("after a refused codec change the tones stopped")
	}
	// The target trunk leg stayed on PCMU throughout.
	got := target.captured()
	for pt := range got {
		if pt != 0 && pt != 101 {
			t.Fatalf("the PCMU leg received payload type %d", pt)
		}
	}
	if len(got[0]) < 100 {
		t.Fatalf("the PCMU leg received %d PCMU packets", len(got[0]))
	}
}

// TestTransferFromSDESTrunk: a trunk whose leg is SDES-SRTP encrypted
// transfers the browser to a plain-RTP trunk. The relay calls the target
// on a new media leg keyed (here: not keyed) by the target's own policy
// and moves the browser's media to it; the old keys go with the old leg.
func TestTransferFromSDESTrunk(t *testing.T) {
	c := newSDESCaller(t, nil)
	target := newTrunkUAS(t)
	r := startRelayWith(t, nil, nil, chain(withUsers("alice", "wonderland"), func(cfg *config.Config) {
		cfg.Media.Timeout = 30 * time.Second
		cfg.Trunks = []config.Trunk{
			{Name: "target", Match: "^7", Address: "sip:" + target.addr, Codecs: []string{"PCMU"}, Sources: []string{"127.0.0.2/32"}},
			{Name: "t", Match: ".*", Address: "sip:127.0.0.1:5999", Transport: "udp", Codecs: []string{"PCMU"},
				SRTP: mediaplan.SRTPOptional, AllowSDESOverInsecureTransport: true},
		}
	}))
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := c.call(ctx, r.SIPUDPAddr(), "udp", "alice", c.offer("RTP/AVP", true))
	if res.StatusCode != 200 {
		t.Fatalf("trunk got %d %s", res.StatusCode, res.Reason)
	}
	waitChan(t, "the browser leg to connect", p.conn)
	if res := sendRefer(t, c.dcs.InviteResponse.Contact().Address, c.dcs.Do, "<sip:7001@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER: %v", res)
	}
	waitChan(t, "the transfer target's INVITE", target.answered)
	if inv := target.lastInvite(); strings.Contains(string(inv.Body()), "a=crypto") {
		t.Fatalf("the plain target was offered SDES:\n%s", inv.Body())
	}
	// The browser's audio reaches the plain target (which echoes) and
	// comes back: the new leg is plain RTP, not the old leg's SRTP.
	waitFor(t, "the swap", 10*time.Second, func() bool { return p.sendCheck(10) >= 5 })
	if got := p.sendCheck(50); got < 40 {
		t.Fatalf("after the transfer only %d of 50 frames came back from the plain target", got)
	}
	waitFor(t, "the old leg's port released", 5*time.Second, func() bool { return r.PortsInUse() == 1 })
}
