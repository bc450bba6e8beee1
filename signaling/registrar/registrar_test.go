package registrar

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/digest"
)

func newTestRegistrar() *Registrar {
	return New(digest.NewCredentials("example"), config.Default().SIP, metrics.NewRelay(metrics.Options{}),
		slog.New(slog.NewTextHandler(io.Discard, nil)), func(*sip.Request, sip.ServerTransaction) bool { return false })
}

// TestBindings: a device's refresh replaces its binding, one out of order
// does not; Lookup skips expired bindings, newest expiry first; UserOn and
// ConnClosed go by the WebSocket a binding came over.
func TestBindings(t *testing.T) {
	g := newTestRegistrar()
	now := time.Now()
	g.add(&Binding{User: "alice", Key: "a@phone", Source: "10.0.0.1:1000", Expires: now.Add(time.Minute), callID: "c1", cseq: 2})
	g.add(&Binding{User: "alice", Key: "a@phone", Source: "10.0.0.1:1000", Expires: now.Add(time.Hour), callID: "c1", cseq: 1})
	g.add(&Binding{User: "alice", Key: "a@laptop", Source: "10.0.0.2:2000", Expires: now.Add(2 * time.Minute), callID: "c2", cseq: 1})
	g.add(&Binding{User: "alice", Key: "a@old", Source: "10.0.0.3:3000", Expires: now.Add(-time.Second), callID: "c3", cseq: 1})

	got := g.Lookup("alice")
	if len(got) != 2 || got[0].Key != "a@laptop" || got[1].Key != "a@phone" || got[1].Expires != now.Add(time.Minute) {
		t.Fatalf("Lookup(alice) = %+v, want the laptop, then the phone with its in-order expiry", got)
	}
	if u := g.UserOn("10.0.0.2:2000"); u != "alice" {
		t.Fatalf("UserOn(laptop's WebSocket) = %q", u)
	}
	if u := g.UserOn("10.0.0.3:3000"); u != "" {
		t.Fatalf("UserOn(an expired binding's WebSocket) = %q", u)
	}
	g.ConnClosed("10.0.0.2:2000")
	if got := g.Lookup("alice"); len(got) != 1 || got[0].Key != "a@phone" {
		t.Fatalf("after the laptop's WebSocket closed: %+v", got)
	}
	g.removeUser("alice")
	if got := g.Lookup("alice"); len(got) != 0 {
		t.Fatalf("after removing alice: %+v", got)
	}
}

// TestLockout: sip.auth_failures wrong passwords lock the source out for
// that user, not for others; a success clears the count.
func TestLockout(t *testing.T) {
	g := newTestRegistrar()
	now := time.Now()
	for i := 1; i < g.sip.AuthFailures; i++ {
		if g.fail("10.0.0.1", "alice", now) {
			t.Fatalf("locked out after %d failures of %d", i, g.sip.AuthFailures)
		}
	}
	g.succeed("10.0.0.1", "alice")
	for i := 1; i < g.sip.AuthFailures; i++ {
		g.fail("10.0.0.1", "alice", now)
	}
	if g.lockedOut("10.0.0.1", "alice", now) {
		t.Fatal("a success did not clear the failures")
	}
	if !g.fail("10.0.0.1", "alice", now) || !g.lockedOut("10.0.0.1", "alice", now) {
		t.Fatal("not locked out at sip.auth_failures")
	}
	if g.lockedOut("10.0.0.1", "bob", now) || g.lockedOut("10.0.0.2", "alice", now) {
		t.Fatal("the lockout reaches another user or source")
	}
	if g.lockedOut("10.0.0.1", "alice", now.Add(g.sip.AuthLockout+time.Second)) {
		t.Fatal("still locked out after sip.auth_lockout")
	}
}
