package throttle

import (
	"testing"
	"time"
)

// TestBuckets: a key gets burst tokens, then rate per second; keys do not
// share a bucket.
func TestBuckets(t *testing.T) {
	b := NewBuckets(2, 3)
	now := time.Now()
	for i := range 3 {
		if !b.Take("a", now) {
			t.Fatalf("token %d of the burst refused", i+1)
		}
	}
	if b.Take("a", now) {
		t.Fatal("a fourth token within the burst")
	}
	if !b.Take("b", now) {
		t.Fatal("another key shares the empty bucket")
	}
	if !b.Take("a", now.Add(500*time.Millisecond)) || b.Take("a", now.Add(500*time.Millisecond)) {
		t.Fatal("half a second at 2/s did not give back exactly one token")
	}
}

// TestUsers: the cap on calls in progress and the attempts per minute.
func TestUsers(t *testing.T) {
	u := NewUsers(1, 2)
	if !u.Acquire("alice") || u.Acquire("alice") || !u.Acquire("bob") {
		t.Fatal("sip.user_max_calls 1 not held per user")
	}
	u.Release("alice")
	if !u.Acquire("alice") {
		t.Fatal("a released call still counted")
	}
	now := time.Now()
	if !u.Attempt("alice", now) || !u.Attempt("alice", now) || u.Attempt("alice", now) {
		t.Fatal("sip.user_call_rate 2 not held")
	}
	if !u.Attempt("alice", now.Add(30*time.Second)) {
		t.Fatal("no attempt back after 30 s at 2 a minute")
	}
	if free := NewUsers(0, 0); !free.Acquire("x") || !free.Acquire("x") || !free.Attempt("x", now) {
		t.Fatal("0 is not no limit")
	}
}

// TestSourceIP: the port goes, IPv6 loses its brackets, and a source that
// is not host:port stays as it is.
func TestSourceIP(t *testing.T) {
	for src, want := range map[string]string{
		"192.0.2.1:5060":   "192.0.2.1",
		"[2001:db8::1]:80": "2001:db8::1",
		"192.0.2.1":        "192.0.2.1",
		"":                 "",
	} {
		if got := SourceIP(src); got != want {
			t.Errorf("SourceIP(%q) = %q, want %q", src, got, want)
		}
	}
}
