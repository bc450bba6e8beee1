package connguard

import (
	"strings"
	"testing"
)

func TestSIPFramer(t *testing.T) {
	msg := "OPTIONS sip:r SIP/2.0\r\nVia: SIP/2.0/TCP x\r\nContent-Length: 5\r\n\r\nhello"
	bare := "OPTIONS sip:r SIP/2.0\r\nl: 0\r\n\r\n"
	for _, tc := range []struct {
		name     string
		chunks   []string
		complete int
		partial  bool
		err      bool
	}{
		{"one", []string{msg}, 1, false, false},
		{"two in one read", []string{msg + bare}, 2, false, false},
		{"byte by byte", strings.Split(msg, ""), 1, false, false},
		{"head split at CRLF", []string{msg[:40], msg[40:]}, 1, false, false},
		{"unfinished head", []string{"OPTIONS sip:r SIP/2.0\r\nVia: x\r\n"}, 0, true, false},
		{"unfinished body", []string{msg[:len(msg)-2]}, 0, true, false},
		{"keepalive", []string{"\r\n\r\n"}, 2, false, false},
		{"bad length", []string{"INVITE sip:r SIP/2.0\r\nContent-Length: -1\r\n\r\n"}, 0, false, true},
		{"two lengths", []string{"INVITE sip:r SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n"}, 0, false, true},
		{"head too large", []string{"INVITE sip:r SIP/2.0\r\nX: " + strings.Repeat("a", maxSIPHead)}, 0, false, true},
	} {
		var f sipFramer
		complete, failed := 0, false
		for _, c := range tc.chunks {
			n, err := f.feed([]byte(c))
			complete += n
			if err != nil {
				failed = true
				break
			}
		}
		if complete != tc.complete || failed != tc.err || (!failed && f.inMessage() != tc.partial) {
			t.Errorf("%s: complete %d err %v partial %v, want %d %v %v", tc.name, complete, failed, f.inMessage(), tc.complete, tc.err, tc.partial)
		}
	}
}

// FuzzSIPFramer: whatever a peer sends, the framer neither panics nor
// holds more than a head's worth, and splitting the input differently
// does not change what it finds.
func FuzzSIPFramer(f *testing.F) {
	f.Add([]byte("OPTIONS sip:r SIP/2.0\r\nContent-Length: 5\r\n\r\nhello\r\n\r\n"), 7)
	f.Add([]byte("INVITE sip:r SIP/2.0\r\nl: 99999999999999999999\r\n\r\n"), 3)
	f.Add([]byte("\r\n\r\nX\r\n\r\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		var whole, parts sipFramer
		n1, err1 := whole.feed(data)
		if len(whole.head) > maxSIPHead {
			t.Fatalf("head grew to %d", len(whole.head))
		}
		if len(data) == 0 {
			split = 0
		} else if split %= len(data); split < 0 {
			split += len(data)
		}
		a, err2 := parts.feed(data[:split])
		var b int
		if err2 == nil {
			b, err2 = parts.feed(data[split:])
		}
		if (err1 == nil) != (err2 == nil) || (err1 == nil && (n1 != a+b || whole.inMessage() != parts.inMessage())) {
			t.Fatalf("split at %d: %d/%v vs %d+%d/%v", split, n1, err1, a, b, err2)
		}
	})
}
