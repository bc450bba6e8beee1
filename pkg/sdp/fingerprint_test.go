package sdp

import (
	"strings"
	"testing"
)

const fp256 = "sha-256 AB:cd:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"

func TestParseFingerprint(t *testing.T) {
	h, v, err := ParseFingerprint("a=fingerprint:" + fp256)
	if err != nil || h != "sha-256" || v != strings.ToUpper(strings.Fields(fp256)[1]) {
		t.Fatalf("got %q %q %v", h, v, err)
	}
	for _, bad := range []string{"", "sha-256", "md5 AB:CD", "sha-256 AB:CD", "sha-1 " + strings.Repeat("ZZ:", 19) + "ZZ", fp256 + " extra"} {
		if _, _, err := ParseFingerprint(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseSetup(t *testing.T) {
	for in, want := range map[string]string{"actpass": "actpass", "a=setup:Active": "active", " passive ": "passive", "setup:holdconn": "holdconn"} {
		if got, err := ParseSetup(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := ParseSetup("both"); err == nil {
		t.Error("unknown role parsed")
	}
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add(fp256)
	f.Add("sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33")
	f.Add("a=fingerprint:sha-512 00")
	f.Fuzz(func(t *testing.T, s string) {
		h, v, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		// What parses re-parses to the same thing.
		h2, v2, err := ParseFingerprint(h + " " + v)
		if err != nil || h2 != h || v2 != v {
			t.Fatalf("%q: round trip %q %q %v", s, h2, v2, err)
		}
	})
}

func FuzzParseSetup(f *testing.F) {
	for _, s := range []string{"actpass", "a=setup:active", "passive", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseSetup(s)
		if err == nil {
			if r2, err := ParseSetup(r); err != nil || r2 != r {
				t.Fatalf("%q: %q", s, r2)
			}
		}
	})
}
