package digest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// authorization answers a challenge for user with password, as a client would.
func authorization(realm, user, password, nonce, nc string) string {
	ha1 := hexHash(algSHA256, user, realm, password)
	ha2 := hexHash(algSHA256, "REGISTER", "sip:"+realm)
	resp := hexHash(algSHA256, ha1, nonce, nc, "c0ffee", "auth", ha2)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="sip:%s", algorithm=SHA-256, qop=auth, nc=%s, cnonce="c0ffee", response="%s"`,
		user, realm, nonce, realm, nc, resp)
}

// TestVerify: the right password passes once per nonce-count; a replay, a
// wrong password, a nonce bound elsewhere and an old nonce do not.
func TestVerify(t *testing.T) {
	c := NewCredentials("example")
	c.AddPassword("alice", "wonderland")
	n := NewNonces()
	now := time.Now()
	nonce := n.Make("ws:1", now)

	for _, tc := range []struct {
		name, auth, bind string
		want             Result
	}{
		{"right", authorization("example", "alice", "wonderland", nonce, "00000001"), "ws:1", OK},
		{"replayed", authorization("example", "alice", "wonderland", nonce, "00000001"), "ws:1", Replay},
		{"next count", authorization("example", "alice", "wonderland", nonce, "00000002"), "ws:1", OK},
		{"wrong password", authorization("example", "alice", "queen", nonce, "00000003"), "ws:1", Wrong},
		{"other connection", authorization("example", "alice", "wonderland", nonce, "00000004"), "ws:2", Missing},
		{"old nonce", authorization("example", "alice", "wonderland", n.Make("ws:1", now.Add(-time.Hour)), "00000001"), "ws:1", Stale},
		{"not digest", "Basic YWxpY2U6d29uZGVybGFuZA==", "ws:1", Missing},
	} {
		if got, user := c.Verify(n, tc.auth, "REGISTER", tc.bind, now); got != tc.want {
			t.Errorf("%s: Verify = %d (user %q), want %d", tc.name, got, user, tc.want)
		}
	}
}

// TestChallenges: SHA-256 is offered before MD5, and stale is said.
func TestChallenges(t *testing.T) {
	got := Challenges("example", "abc", true)
	if len(got) != 2 || !strings.Contains(got[0], "algorithm=SHA-256") || !strings.Contains(got[1], "algorithm=MD5") ||
		!strings.HasSuffix(got[0], "stale=true") {
		t.Fatalf("Challenges = %q", got)
	}
	c := NewCredentials("example")
	if u, ok := c.UserFor("nobody"); ok {
		t.Fatalf("UserFor(nobody) = %q", u)
	}
}
