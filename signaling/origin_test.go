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
