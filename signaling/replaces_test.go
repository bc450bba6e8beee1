package signaling

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestParseReplaces(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want replaces
		ok   bool
	}{
		{"abc@host;to-tag=1;from-tag=2", replaces{callID: "abc@host", toTag: "1", fromTag: "2"}, true},
		{" abc ; from-tag = 2 ; TO-TAG=1 ;early-only", replaces{callID: "abc", toTag: "1", fromTag: "2", earlyOnly: true}, true},
		{"abc;to-tag=1", replaces{}, false},
		{";to-tag=1;from-tag=2", replaces{}, false},
		{"a b;to-tag=1;from-tag=2", replaces{}, false},
		{"", replaces{}, false},
	} {
		got, ok := parseReplaces(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseReplaces(%q) = %+v %v, want %+v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	rep, _ := parseReplaces("abc;to-tag=1;from-tag=2")
	if !rep.matches(sip.DialogIDMake("abc", "1", "2")) || !rep.matches(sip.DialogIDMake("abc", "2", "1")) || rep.matches(sip.DialogIDMake("abc", "1", "3")) {
		t.Error("matches")
	}
}

func TestReferReplaces(t *testing.T) {
	var u sip.Uri
	if err := sip.ParseUri("sip:bob@example.org?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2", &u); err != nil {
		t.Fatal(err)
	}
	rep, present, ok := referReplaces(u)
	if !present || !ok || rep.String() != "abc@h;to-tag=1;from-tag=2" {
		t.Fatalf("got %+v %v %v", rep, present, ok)
	}
	if err := sip.ParseUri("sip:bob@example.org", &u); err != nil {
		t.Fatal(err)
	}
	if _, present, _ := referReplaces(u); present {
		t.Fatal("Replaces found in a plain URI")
	}
}

// FuzzParseReplaces: Replaces values come from the network (INVITE
// headers and Refer-To URIs); parsing must never panic, and what parses
// must print back to something that parses the same.
func FuzzParseReplaces(f *testing.F) {
	for _, s := range []string{"abc@host;to-tag=1;from-tag=2", "x;from-tag=;to-tag=", "a;to-tag=1;from-tag=2;early-only", ";;;", "%3B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rep, ok := parseReplaces(s)
		if !ok {
			return
		}
		again, ok := parseReplaces(rep.String())
		if !ok || again != rep {
			if strings.ContainsAny(rep.toTag+rep.fromTag, ";=") {
				return // a tag with a separator in it cannot round-trip; tags never have one
			}
			t.Fatalf("%q parsed to %+v, which prints as %q and parses to %+v", s, rep, rep.String(), again)
		}
		var u sip.Uri
		if sip.ParseUri("sip:x@h?Replaces="+s, &u) == nil {
			_, _, _ = referReplaces(u)
		}
	})
}
