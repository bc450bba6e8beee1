package signaling

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// refer sends REFER from the trunk's side of the call and returns the response.
func (u *trunkUAC) refer(t *testing.T, target string) *sip.Response {
	t.Helper()
	return sendRefer(t, u.dcs.InviteResponse.Contact().Address, u.dcs.Do, target)
}

func TestTransferFromTrunk(t *testing.T) {
	target := newTrunkUAS(t) // echoes RTP
	_, u, p := answeredCall(t, func(c *config.Config) {
		c.Media.Timeout = 30 * time.Second
		c.Trunks = append([]config.Trunk{{Name: "target", Match: "^7", Address: "sip:" + target.addr, Codecs: []string{"PCMU"}}}, c.Trunks...)
	})
	res := u.refer(t, "<sip:7001@127.0.0.1>")
	if res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	select {
	case <-target.answered:
	case <-time.After(10 * time.Second):
		t.Fatal("the transfer target was never called")
	}
	select {
	case <-u.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("the transferring trunk leg got no BYE")
	}
	u.mu.Lock()
	notes := strings.Join(u.notifys, " | ")
	u.mu.Unlock()
	if !strings.Contains(notes, "SIP/2.0 100 Trying") || !strings.HasSuffix(notes, "SIP/2.0 200 OK") {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	// The browser now talks to the target, which echoes.
	if got := p.sendCheck(50); got < 40 {
		t.Fatalf("after the transfer only %d of 50 frames came back", got)
	}
	if inv := target.lastInvite(); strings.Contains(inv.String(), u.addr) {
		t.Fatalf("transferor's address leaked to the target:\n%s", inv)
	}
	p.mu.Lock()
	d := p.dialogs[0]
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Bye(ctx); err != nil {
		t.Fatalf("browser bye: %v", err)
	}
	select {
	case <-target.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("the target got no BYE when the browser hung up")
	}
}

func TestTransferToBusyTarget(t *testing.T) {
	target := newTrunkUAS(t)
	target.code = 486
	r, u, _ := answeredCall(t, func(c *config.Config) {
		c.Media.Timeout = 30 * time.Second
		c.Trunks = append([]config.Trunk{{Name: "target", Match: "^7", Address: "sip:" + target.addr, Codecs: []string{"PCMU"}}}, c.Trunks...)
	})
	if res := u.refer(t, "<sip:7001@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	waitFor(t, "final NOTIFY", 5*time.Second, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.notifys) == 2
	})
	u.mu.Lock()
	last := u.notifys[1]
	u.mu.Unlock()
	if last != "SIP/2.0 486 Trunk Says No" {
		t.Fatalf("final NOTIFY %q", last)
	}
	// The call goes on with the original trunk leg.
	if r.ActiveCalls() != 1 {
		t.Fatal("call ended after a failed transfer")
	}
	if got := u.echoCheck(30); got < 24 {
		t.Fatalf("after the failed transfer only %d of 30 frames came back", got)
	}
	_ = u.bye()
}

// TestTransferFromBrowser: the browser that took a trunk's call transfers
// the caller to another registered user with REFER; the relay rings that
// user's browser, swaps it in, reports with NOTIFY and hangs up on the
// transferor. The caller's audio then goes through the new browser.
func TestTransferFromBrowser(t *testing.T) {
	r, u, alice := answeredCall(t, func(c *config.Config) { c.Media.Timeout = 30 * time.Second })
	bob := newRegPhone(t, r, "bob", "desk", "PCMU")
	bob.mustRegister("builder")
	alice.mu.Lock()
	d := alice.dialogs[0]
	alice.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target := d.InviteRequest.Contact().Address
	req := sip.NewRequest(sip.REFER, *target.Clone())
	req.AppendHeader(sip.NewHeader("Refer-To", "<sip:bob@127.0.0.1>"))
	res, err := d.Do(ctx, req)
	if err != nil || res.StatusCode != 202 {
		t.Fatalf("REFER: %v %v", res, err)
	}
	select {
	case <-bob.conn:
	case <-ctx.Done():
		t.Fatal("the transfer target's browser did not connect")
	}
	select {
	case <-alice.byes:
	case <-ctx.Done():
		t.Fatal("the transferor got no BYE")
	}
	alice.mu.Lock()
	notes := strings.Join(alice.notifys, " | ")
	alice.mu.Unlock()
	if notes != "SIP/2.0 100 Trying | SIP/2.0 200 OK" {
		t.Fatalf("NOTIFYs: %s", notes)
	}
	if from := bob.invites[0].From().Address.User; from != "+15557654321" {
		t.Fatalf("transfer target sees caller %q, want the trunk's caller", from)
	}
	if got := u.echoCheck(50); got < 40 {
		t.Fatalf("after the transfer only %d of 50 frames came back through the new browser", got)
	}
	if r.ActiveCalls() != 1 {
		t.Fatal("call count changed")
	}
	// Transfer to someone who is not a user is declined.
	req = sip.NewRequest(sip.REFER, *bob.dialogs[0].InviteRequest.Contact().Address.Clone())
	req.AppendHeader(sip.NewHeader("Refer-To", "<sip:nobody@127.0.0.1>"))
	if res, err := bob.dialogs[0].Do(ctx, req); err != nil || res.StatusCode != 603 {
		t.Fatalf("REFER to a non-user: %v %v", res, err)
	}
	_ = u.bye()
	select {
	case <-bob.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("the new browser got no BYE")
	}
}
