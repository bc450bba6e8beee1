package dtmf

import (
	"testing"
	"time"
)

func TestParseInfo(t *testing.T) {
	for _, tc := range []struct {
		ct, body string
		digit    byte
		dur      time.Duration
		ok       bool
	}{
		{"application/dtmf-relay", "Signal=5\r\nDuration=250\r\n", '5', 250 * time.Millisecond, true},
		{"application/dtmf-relay", "Signal=#\nDuration=100", '#', 100 * time.Millisecond, true},
		{"application/dtmf-relay", "Signal=11", '#', 160 * time.Millisecond, true},
		{"application/dtmf", "*", '*', 160 * time.Millisecond, true},
		{"application/dtmf-relay", "Signal=Z", 0, 0, false},
		{"text/plain", "5", 0, 0, false},
	} {
		d, dur, ok := ParseInfo(tc.ct, tc.body)
		if ok != tc.ok || d != tc.digit || (ok && dur != tc.dur) {
			t.Errorf("%s %q: %q %v %v", tc.ct, tc.body, d, dur, ok)
		}
	}
}
