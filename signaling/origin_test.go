package signaling

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
)

func TestOriginAllowed(t *testing.T) {
	allowed := []string{"https://app.example.com"}
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nUpgrade: websocket", true},                            // no Origin: not a browser
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://relay:8080", true},                     // its own page
		{"GET /ws HTTP/1.1\r\nHost: RELAY\r\nOrigin: http://relay:80/", true},                           // default port, case
		{"GET /ws HTTP/1.1\r\nHost: relay\r\nOrigin: https://relay", true},                              // https default port
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://evil.example", false},                  // foreign page
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://relay:8081", false},                    // other port
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: null", false},                                 // sandboxed page
		{"GET /ws HTTP/1.1\r\nOrigin: http://relay:8080", false},                                        // no Host to compare
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: https://app.example.com", true},               // listed
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: https://APP.example.com/", true},              // listed, case
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://app.example.com", false},               // listed with https only
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: https://app.example.com.evil.example", false}, // suffix trick
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: ftp://relay:8080", false},                     // not a web origin
	} {
		if _, got := originAllowed([]byte(tc.head), allowed); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.head, got, tc.want)
		}
	}
	if _, ok := originAllowed([]byte("GET /ws HTTP/1.1\r\nHost: a\r\nOrigin: http://b"), []string{"*"}); !ok {
		t.Error(`"*" does not allow any origin`)
	}
}

func FuzzOriginAllowed(f *testing.F) {
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://relay:8080"), "https://app.example.com")
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: [::1]:80\r\nOrigin: http://[::1]"), "*")
	f.Add([]byte("GET /ws HTTP/1.1\r\nOrigin: %zz\r\nHost: :"), "")
	f.Fuzz(func(t *testing.T, head []byte, allowed string) {
		origin, ok := originAllowed(head, []string{allowed})
		if _, has := headerValue(head, "Origin"); !has && (!ok || origin != "") {
			t.Fatalf("no Origin header but allowed=%v origin=%q", ok, origin)
		}
	})
}

// upgradeStatus sends a SIP WebSocket upgrade with origin (none when
// empty) to the relay and returns the HTTP status it gets.
func upgradeStatus(t *testing.T, r *Relay, origin string) int {
	t.Helper()
	c, err := net.Dial("tcp", r.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: " + r.HTTPAddr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("upgrade with Origin %q: %v", origin, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestWebSocketOrigin: a page from a foreign origin gets 403 before the
// upgrade; the relay's own page, a configured origin and a client sending
// no Origin are upgraded.
func TestWebSocketOrigin(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.HTTP.AllowedOrigins = []string{"https://app.example.com"} })
	own := "http://" + r.HTTPAddr().String()
	for origin, want := range map[string]int{
		"":                        http.StatusSwitchingProtocols,
		own:                       http.StatusSwitchingProtocols,
		"https://app.example.com": http.StatusSwitchingProtocols,
		"https://evil.example":    http.StatusForbidden,
		strings.Replace(own, "127.0.0.1", "localhost", 1): http.StatusForbidden,
	} {
		if got := upgradeStatus(t, r, origin); got != want {
			t.Errorf("Origin %q: %d, want %d", origin, got, want)
		}
	}
	if v := metricValue(metricsText(t, r), "mediarelay_connections_refused_total", `listener="http",reason="origin"`); v != 2 {
		t.Errorf("refused for origin: %v, want 2", v)
	}
}
