package benchmarks

import (
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
)

// TestUASAnswersDTLSSRTP: to an end-to-end offer (UDP/TLS/RTP/SAVP, the
// browser's fingerprint) the trunk UAS answers with its own certificate's
// fingerprint and the opposite DTLS role, and refuses an offer it could
// not verify.
func TestUASAnswersDTLSSRTP(t *testing.T) {
	u, err := NewUAS(t.Context(), "127.0.0.1:0", true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const fp = "sha-256 9A:A9:5C:9B:79:09:D8:BF:F6:B8:96:C1:F3:04:40:EC:23:F8:37:C8:38:07:29:A1:1A:0B:A4:5C:79:66:C8:91"
	offer := func(setup string) string {
		return strings.Join([]string{
			"v=0", "o=mediarelay 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio 30000 UDP/TLS/RTP/SAVP 0", "a=rtpmap:0 PCMU/8000", "a=fingerprint:" + fp, "a=setup:" + setup, "a=rtcp-mux", "",
		}, "\r\n")
	}
	for setup, want := range map[string]string{"actpass": "a=setup:passive", "active": "a=setup:passive", "passive": "a=setup:active"} {
		ans, err := u.Answer("k-"+setup, []byte(offer(setup)))
		if err != nil {
			t.Fatalf("setup:%s: %v", setup, err)
		}
		a := string(ans)
		for _, line := range []string{"m=audio " + strconv.Itoa(u.RTPPort()) + " UDP/TLS/RTP/SAVP 0", "a=fingerprint:" + u.id.fp, want, "a=rtcp-mux"} {
			if !strings.Contains(a, line+"\r\n") {
				t.Errorf("setup:%s: answer lacks %q:\n%s", setup, line, a)
			}
		}
		u.Release("k-" + setup)
	}
	if _, err := u.Answer("k", []byte(strings.Replace(offer("actpass"), "a=fingerprint:"+fp+"\r\n", "", 1))); err == nil {
		t.Error("a DTLS-SRTP offer without a fingerprint was answered")
	}
}
