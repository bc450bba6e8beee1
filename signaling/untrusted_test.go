package signaling

import (
	"strings"
	"testing"
	"time"
)

// TestWSParseErrorLogBounded: an unparsable message over WebSocket is
// logged at debug level with a bounded excerpt, never whole at error level,
// and the relay goes on serving WebSockets (sipgo drops the connection
// that sent it).
func TestWSParseErrorLogBounded(t *testing.T) {
	log, buf := bufLogger()
	r := startRelayWith(t, nil, log, nil)
	w := dialRawWS(t, r)
	junk := "NOT SIP " + strings.Repeat("A", 20000) + "\r\n\r\n"
	if err := w.send(0x1, []byte(junk)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the parse failure to be logged", 5*time.Second, func() bool { return strings.Contains(buf.String(), "failed to parse") })
	for _, line := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(line, "failed to parse") {
			continue
		}
		if !strings.Contains(line, "level=DEBUG") {
			t.Errorf("parse failure not at debug level: %.200s", line)
		}
		if len(line) > 2000 || strings.Contains(line, strings.Repeat("A", 1000)) {
			t.Errorf("parse failure logged unbounded (%d bytes)", len(line))
		}
	}
	if res := dialRawWS(t, r).request(t, sipOptionsWS()); res.StatusCode != 200 {
		t.Fatalf("OPTIONS after junk: %d", res.StatusCode)
	}
}

func sipOptionsWS() string {
	return "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS raw.invalid;branch=z9hG4bKopt" +
		"\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}
