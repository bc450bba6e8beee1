package token

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMintParse(t *testing.T) {
	exp := time.Unix(1900000000, 0)
	u, p := Mint("s3cret", "alice", exp)
	if u != "1900000000:alice" {
		t.Fatalf("username %q", u)
	}
	if p != Password("s3cret", u) || p == Password("other", u) {
		t.Fatal("password does not depend on the secret as it should")
	}
	gotExp, user, err := Parse(u)
	if err != nil || user != "alice" || !gotExp.Equal(exp) {
		t.Fatalf("Parse(%q) = %v %q %v", u, gotExp, user, err)
	}
}

// TestPasswordCoturn checks the coturn REST API convention against a value
// computed independently: printf '%s' 1600000000:bob | openssl dgst -sha1 -hmac secret -binary | base64.
func TestPasswordCoturn(t *testing.T) {
	if got, want := Password("secret", "1600000000:bob"), "SKk0StU1h/iLeywt541ycA2Dk0Q="; got != want {
		t.Fatalf("Password = %s, want %s", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "alice", ":alice", "123:", "12a:alice", "-1:alice", "1:a:b", "1:a b",
		"1234567890123:alice", "1:" + strings.Repeat("x", 300), "1:\x00"} {
		if _, _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1900000000:alice", "0:x", "1:a:b", "", "99999999999999:x", "1:\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, user, err := Parse(s)
		if err != nil {
			return
		}
		if user == "" || strings.ContainsAny(user, ": ") || exp.Unix() < 0 {
			t.Fatalf("Parse(%q) = %v %q", s, exp, user)
		}
		exp0, _, _ := strings.Cut(s, ":")
		if exp0 = strings.TrimLeft(exp0, "0"); exp0 == "" {
			exp0 = "0"
		}
		if again := strconv.FormatInt(exp.Unix(), 10) + ":" + user; again != exp0+":"+user {
			t.Fatalf("Parse(%q) does not round-trip: %q", s, again)
		}
	})
}
