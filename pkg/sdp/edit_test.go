package sdp

import (
	"net/netip"
	"strings"
	"testing"
)

const editBody = "v=0\r\no=- 42 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\na=setup:actpass\r\n"

func TestVersion(t *testing.T) {
	for body, want := range map[string]uint64{
		editBody:                   7,
		"v=0\r\ns=-\r\n":           1, // no o= line
		"o=- 1 x IN IP4 1.2.3.4\n": 0, // a version that is not a number
	} {
		if got := Version(body); got != want {
			t.Errorf("Version(%q) = %d, want %d", body, got, want)
		}
	}
}

func TestRewrite(t *testing.T) {
	got := Rewrite(editBody, "sendonly", 8, "active")
	for _, want := range []string{"o=- 42 8 IN IP4 127.0.0.1\r\n", "a=sendonly\r\n", "a=setup:active\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("Rewrite: no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "a=sendrecv") || strings.Count(got, "a=sendonly") != 1 {
		t.Errorf("Rewrite: want exactly one direction, a=sendonly:\n%s", got)
	}
	if _, a, err := Parse([]byte(got)); err != nil || a.Direction != "sendonly" || len(a.Codecs) != 2 {
		t.Errorf("Rewrite's SDP parses as %+v, %v", a, err)
	}
	// No setup given: a=setup stays as it was.
	if got := Rewrite(editBody, "inactive", 9, ""); !strings.Contains(got, "a=setup:actpass\r\n") || !strings.Contains(got, "a=inactive\r\n") {
		t.Errorf("Rewrite without setup:\n%s", got)
	}
}

func TestSetCodecs(t *testing.T) {
	got := SetCodecs(editBody, []Codec{{Name: "opus", PT: 111, Clock: 48000, Channels: 2, Fmtp: "minptime=10"}, {Name: "telephone-event", PT: 126, Clock: 48000}})
	_, a, err := Parse([]byte(got))
	if err != nil {
		t.Fatalf("SetCodecs' SDP does not parse: %v\n%s", err, got)
	}
	if len(a.Codecs) != 2 || a.Codecs[0].PT != 111 || a.Codecs[0].Fmtp != "minptime=10" || a.Codecs[0].Channels != 2 || a.Codecs[1].PT != 126 {
		t.Errorf("SetCodecs: codecs %+v\n%s", a.Codecs, got)
	}
	if !strings.Contains(got, "m=audio 4000 RTP/AVP 111 126\r\n") || strings.Contains(got, "PCMU") || strings.Contains(got, "a=fmtp:101") {
		t.Errorf("SetCodecs: old codecs left or m-line wrong:\n%s", got)
	}
	if a.Direction != "sendrecv" || !strings.Contains(got, "a=setup:actpass") {
		t.Errorf("SetCodecs changed what it should keep:\n%s", got)
	}
}

func TestEffectiveDirection(t *testing.T) {
	for _, tc := range []struct {
		a    Audio
		want string
	}{
		{Audio{Addr: netip.MustParseAddr("127.0.0.1"), Direction: "recvonly"}, "recvonly"},
		{Audio{Addr: netip.MustParseAddr("127.0.0.1")}, "sendrecv"},
		{Audio{Addr: netip.MustParseAddr("0.0.0.0"), Direction: "sendrecv"}, "inactive"}, // RFC 2543 hold
	} {
		if got := tc.a.EffectiveDirection(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.a, got, tc.want)
		}
	}
}

// FuzzEdit: the text edits take any body without panicking, and Rewrite
// leaves exactly one direction line.
func FuzzEdit(f *testing.F) {
	f.Add(editBody, "recvonly")
	f.Add("m=audio 1 RTP/AVP\r\nm=video 2 RTP/AVP 96\r\na=sendrecv\r\n", "inactive")
	f.Add("", "sendrecv")
	f.Fuzz(func(t *testing.T, body, dir string) {
		_ = Version(body)
		_ = SetCodecs(body, []Codec{{Name: "PCMA", PT: 8, Clock: 8000}})
		if strings.ContainsAny(dir, "\r\n") || dir == "" {
			return
		}
		got := Rewrite(body, dir, 3, "passive")
		if n := strings.Count(got, "a="+dir+"\r\n"); n < 1 {
			t.Fatalf("Rewrite(%q, %q): no a=%s line:\n%q", body, dir, dir, got)
		}
	})
}
