package signaling

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/token"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// authRequired turns caller authentication back on (startRelay turns it
// off for tests that are not about it).
func authRequired(c *config.Config) { c.SIP.AnonymousCalls = false }

// trunkInvites is how many INVITEs the trunk has received.
func (u *trunkUAS) trunkInvites() int {
	u.bookMu.Lock()
	defer u.bookMu.Unlock()
	return len(u.invites)
}

// TestCallAuthRequired: a browser INVITE to a trunk with no credentials
// gets 407 and the trunk hears nothing, wrong ones too; the echo needs
// none; digest credentials or a registration on the same WebSocket let the
// call through.
func TestCallAuthRequired(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, chain(withTrunk(u, mediaplan.ModeAuto, "PCMU"), withUsers("alice", "wonderland"), authRequired))

	t.Run("no credentials", func(t *testing.T) {
		p := newPhone(t, "PCMU")
		if code := callStatus(t, p, r, "+15551234567"); code != 407 {
			t.Fatalf("INVITE without credentials got %d, want 407", code)
		}
		if n := u.trunkInvites(); n != 0 {
			t.Fatalf("the trunk received %d INVITEs", n)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		p := newPhone(t, "PCMU")
		p.authUser, p.authPass = "alice", "looking-glass"
		if code := callStatus(t, p, r, "+15551234567"); code != 407 {
			t.Fatalf("INVITE with a wrong password got %d, want 407", code)
		}
		if n := u.trunkInvites(); n != 0 {
			t.Fatalf("the trunk received %d INVITEs", n)
		}
	})
	t.Run("echo without credentials", func(t *testing.T) {
		p := newPhone(t, "PCMU")
		p.call(r, "echo")
		p.hangup()
	})
	t.Run("digest", func(t *testing.T) {
		p := newPhone(t, "PCMU")
		p.authUser, p.authPass = "alice", "wonderland"
		p.call(r, "+15551234567")
		if n := u.trunkInvites(); n != 1 {
			t.Fatalf("the trunk received %d INVITEs, want 1", n)
		}
		if got := u.lastInvite().From().Address.User; got != "alice" {
			t.Errorf("caller towards the trunk is %q, want the authenticated alice", got)
		}
		p.hangup()
	})
	t.Run("registered websocket", func(t *testing.T) {
		p := newPhone(t, "PCMU")
		phoneRegister(t, p, r, "alice", "wonderland")
		p.call(r, "+15551234567") // no credentials: the WebSocket's registration vouches
		p.hangup()
	})
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// phoneRegister registers p's user over the phone's own WebSocket.
func phoneRegister(t *testing.T, p *phone, r *Relay, user, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host, port := splitHostPort(r.HTTPAddr().String())
	uri := sip.Uri{Host: host, Port: port, UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}}
	req := sip.NewRequest(sip.REGISTER, uri)
	aor := sip.Uri{User: user, Host: host}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(sip.HeaderClone(&p.dua.ContactHDR))
	req.AppendHeader(sip.NewHeader("Expires", "300"))
	req.SetTransport("WS")
	res, err := p.dua.Client.Do(ctx, req)
	if err == nil && res.StatusCode == 401 {
		res, err = p.dua.Client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: password})
	}
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("register %s: %v %v", user, res, err)
	}
}

// TestCallAuthToken: coturn-style time-limited credentials place calls
// until they expire; expired ones get 403 and the trunk hears nothing.
func TestCallAuthToken(t *testing.T) {
	const secret = "shared-with-the-web-app"
	u := newTrunkUAS(t)
	r := startRelay(t, chain(withTrunk(u, mediaplan.ModeAuto, "PCMU"), authRequired, func(c *config.Config) { c.SIP.TokenSecret = secret }))

	t.Run("valid", func(t *testing.T) {
		p := newPhone(t, "PCMU")
		p.authUser, p.authPass = token.Mint(secret, "bob", time.Now().Add(time.Hour))
		p.call(r, "+15551234567")
		if got := u.lastInvite().From().Address.User; got != "bob" {
			t.Errorf("caller towards the trunk is %q, want the token's user bob", got)
		}
		p.hangup()
	})
	t.Run("expired", func(t *testing.T) {
		before := u.trunkInvites()
		p := newPhone(t, "PCMU")
		p.authUser, p.authPass = token.Mint(secret, "bob", time.Now().Add(-time.Minute))
		if code := callStatus(t, p, r, "+15551234567"); code != 403 {
			t.Fatalf("expired credentials got %d, want 403", code)
		}
		if n := u.trunkInvites(); n != before {
			t.Fatalf("the trunk received an INVITE for expired credentials")
		}
	})
	t.Run("other secret", func(t *testing.T) {
		before := u.trunkInvites()
		p := newPhone(t, "PCMU")
		p.authUser, p.authPass = token.Mint("not-the-secret", "bob", time.Now().Add(time.Hour))
		if code := callStatus(t, p, r, "+15551234567"); code != 407 {
			t.Fatalf("credentials minted with another secret got %d, want 407", code)
		}
		if n := u.trunkInvites(); n != before {
			t.Fatalf("the trunk received an INVITE for bad credentials")
		}
	})
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// TestCallAuthUserLimits: one user's concurrent calls and call attempts
// per minute are capped.
func TestCallAuthUserLimits(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, chain(withTrunk(u, mediaplan.ModeAuto, "PCMU"), withUsers("alice", "wonderland"), authRequired, func(c *config.Config) {
		c.SIP.UserMaxCalls = 1
		c.SIP.UserCallRate = 3
	}))
	first := newPhone(t, "PCMU")
	first.authUser, first.authPass = "alice", "wonderland"
	first.call(r, "+15551234567") // attempt 1

	second := newPhone(t, "PCMU")
	second.authUser, second.authPass = "alice", "wonderland"
	if code := callStatus(t, second, r, "+15551234567"); code != 403 { // attempt 2
		t.Fatalf("a second concurrent call got %d, want 403", code)
	}
	first.hangup()
	waitFor(t, "first call ends", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })

	third := newPhone(t, "PCMU")
	third.authUser, third.authPass = "alice", "wonderland"
	third.call(r, "+15551234567") // attempt 3
	third.hangup()
	waitFor(t, "third call ends", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })

	fourth := newPhone(t, "PCMU")
	fourth.authUser, fourth.authPass = "alice", "wonderland"
	if code := callStatus(t, fourth, r, "+15551234567"); code != 503 { // attempt 4
		t.Fatalf("a fourth attempt within the minute got %d, want 503", code)
	}
	if n := u.trunkInvites(); n != 2 {
		t.Fatalf("the trunk received %d INVITEs, want 2", n)
	}
}

// TestAnswerWithoutConnection: a trunk's answer whose SDP has no c= line
// gives the browser 488, and the trunk's dialog is ended with a BYE.
func TestAnswerWithoutConnection(t *testing.T) {
	u := newTrunkUAS(t)
	u.rewrite = func(b []byte) []byte {
		var out []string
		for _, l := range strings.Split(string(b), "\r\n") {
			if !strings.HasPrefix(l, "c=") {
				out = append(out, l)
			}
		}
		return []byte(strings.Join(out, "\r\n"))
	}
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	if code := callStatus(t, p, r, "+15551234567"); code != 488 {
		t.Fatalf("answer without c=: browser got %d, want 488", code)
	}
	waitChan(t, "BYE to the trunk", u.byes)
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// TestCDRWrittenAtAnswer: an answered call has its CDR row (in progress)
// before it ends; the end completes the same row.
func TestCDRWrittenAtAnswer(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	p.call(r, "+15551234567")
	id := activeCallID(t, r)
	ctx := context.Background()
	waitFor(t, "the in-progress CDR row", 5*time.Second, func() bool {
		rec, err := r.CDR().Query(ctx, id)
		return err == nil && rec.EndCause == cdr.CauseInProgress && !rec.Answer.IsZero()
	})
	p.hangup()
	waitFor(t, "the row completed", 5*time.Second, func() bool {
		rec, err := r.CDR().Query(ctx, id)
		return err == nil && rec.EndCause == cdr.CauseNormalBrowser
	})
	if n, _ := r.CDR().Count(ctx); n != 1 {
		t.Fatalf("%d CDR rows for one call", n)
	}
}

// TestTokenUserReceivesCalls: a browser registered with token credentials
// (a user the relay's table does not list) is rung by a trunk's call to its
// user; an unregistered name still gets 404.
func TestTokenUserReceivesCalls(t *testing.T) {
	const secret = "shared-with-the-web-app"
	r, u := inboundRelay(t, func(c *config.Config) { c.SIP.TokenSecret = secret })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if res, err := u.invite(ctx, r, "dora"); err != nil || res.StatusCode != 404 {
		t.Fatalf("call to an unregistered token user: %v %v, want 404", res, err)
	}
	p := newRegPhone(t, r, "dora", "tablet", "PCMU")
	var password string
	p.authUser, password = token.Mint(secret, "dora", time.Now().Add(time.Hour))
	p.mustRegister(password)
	res, err := u.invite(ctx, r, "dora")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("call to a registered token user: %v %v", res, err)
	}
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}
