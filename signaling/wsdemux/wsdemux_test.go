package wsdemux

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func TestIsWebSocketSIP(t *testing.T) {
	for head, want := range map[string]bool{
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade":  true,
		"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nSec-WebSocket-Protocol: chat, sip": true,
		"GET / HTTP/1.1\r\nUpgrade: websocket":                                      false, // no /ws, no sip subprotocol
		"GET /ws HTTP/1.1\r\nHost: x":                                               false, // plain GET of /ws
		"POST /ws HTTP/1.1\r\nUpgrade: websocket":                                   false,
		"GET /metrics HTTP/1.1\r\nHost: x":                                          false,
		"GET /ws?token=1 HTTP/1.1\r\nUpgrade: websocket":                            true,
		"": false,
	} {
		if got := isWebSocketSIP([]byte(head)); got != want {
			t.Errorf("%q: %v, want %v", head, got, want)
		}
	}
}

// TestDemuxSlowClient checks that a request head arriving in pieces is
// routed, and that a silent client does not stop others being served.
func TestDemuxSlowClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := New(l)
	go d.Serve()
	defer l.Close()

	silent, _ := net.Dial("tcp", l.Addr().String())
	defer silent.Close()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, part := range []string{"GET /ws HT", "TP/1.1\r\nUpgrade: web", "socket\r\n\r\n"} {
		_, _ = c.Write([]byte(part))
		time.Sleep(20 * time.Millisecond)
	}
	got, err := d.ws.Accept()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(got).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "GET /ws") {
		t.Fatalf("routed connection reads %q, %v", line, err)
	}
}

func FuzzPeekHead(f *testing.F) {
	f.Add([]byte("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(b)), 4096)
		head, err := peekHead(br)
		if err == nil && len(head) > len(b) {
			t.Fatalf("head longer than input")
		}
		_ = isWebSocketSIP(head)
	})
}
