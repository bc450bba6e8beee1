package ng

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/bencode"
)

// fakeHandler records what it was asked.
type fakeHandler struct {
	mu     sync.Mutex
	offers int
	last   *Request
}

func (h *fakeHandler) Offer(r *Request) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.offers++
	h.last = r
	if r.CallID == "bad" {
		return "", errors.New("ng offer bad: no codec in common")
	}
	return "v=0\r\n", nil
}
func (h *fakeHandler) Answer(r *Request) (string, error) {
	return "", errors.New("unknown call-id")
}
func (h *fakeHandler) Delete(r *Request) (map[string]any, error) {
	return map[string]any{"created": int64(1)}, nil
}
func (h *fakeHandler) Query(r *Request) (map[string]any, error) { return map[string]any{}, nil }
func (h *fakeHandler) List(limit int) []string                  { return []string{"a", "b"}[:min(2, limit)] }
func (h *fakeHandler) Statistics() map[string]any {
	return map[string]any{"currentstatistics": map[string]any{"sessionsown": int64(0)}}
}
func (h *fakeHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.offers
}

func startServer(t *testing.T, h Handler, o Options) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", h, o)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dial(t *testing.T, s *Server) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, s.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip sends raw and returns the reply's cookie and dictionary.
func roundTrip(t *testing.T, c *net.UDPConn, raw []byte) (string, map[string]any) {
	t.Helper()
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply to %q: %v", truncate(string(raw)), err)
	}
	cookie, body, ok := bytes.Cut(buf[:n], []byte(" "))
	if !ok {
		t.Fatalf("reply without cookie: %q", buf[:n])
	}
	d, err := bencode.DecodeDict(body)
	if err != nil {
		t.Fatalf("reply %q: %v", buf[:n], err)
	}
	return string(cookie), d
}

func command(t *testing.T, cookie string, d map[string]any) []byte {
	t.Helper()
	b, err := bencode.Append([]byte(cookie+" "), d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPingAndCommands(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h, Options{})
	c := dial(t, s)
	cookie, d := roundTrip(t, c, []byte("5323_1 d7:command4:pinge"))
	if cookie != "5323_1" || d["result"] != "pong" {
		t.Fatalf("ping: %q %v", cookie, d)
	}
	_, d = roundTrip(t, c, command(t, "c2", map[string]any{"command": "list"}))
	if d["result"] != "ok" || len(d["calls"].([]any)) != 2 {
		t.Errorf("list: %v", d)
	}
	_, d = roundTrip(t, c, command(t, "c3", map[string]any{"command": "statistics"}))
	if _, ok := d["statistics"].(map[string]any); !ok || d["result"] != "ok" {
		t.Errorf("statistics: %v", d)
	}
	_, d = roundTrip(t, c, command(t, "c4", map[string]any{"command": "offer", "call-id": "x", "from-tag": "f", "sdp": "v=0",
		"flags": []any{"trust-address", "codec-strip-PCMA", "transcode-PCMU", "generate-mid", "no-such-flag"},
		"ICE":   "remove", "transport-protocol": "RTP/AVP", "rtcp-mux": []any{"demux"}, "replace": []any{"origin", "session connection"},
		"received-from": []any{"IP4", "192.0.2.1"}, "codec": map[string]any{"mask": []any{"opus"}}, "label": "caller"}))
	if d["result"] != "ok" || d["sdp"] != "v=0\r\n" {
		t.Fatalf("offer: %v", d)
	}
	h.mu.Lock()
	f := h.last.Flags
	h.mu.Unlock()
	if !f.TrustAddress || !f.GenerateMid || f.ICE != "remove" || f.TransportProtocol != "RTP/AVP" ||
		!Has(f.RTCPMux, "demux") || !Has(f.Replace, "session-connection") || !Has(f.Replace, "origin") ||
		f.ReceivedFrom != netip.MustParseAddr("192.0.2.1") || f.Label != "caller" ||
		!Has(f.Codec.Strip, "PCMA") || !Has(f.Codec.Transcode, "PCMU") || !Has(f.Codec.Mask, "opus") || !Has(f.Other, "no-such-flag") {
		t.Errorf("flags parsed as %+v", f)
	}
}

func TestRetransmittedCookieGetsCachedReply(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h, Options{})
	c := dial(t, s)
	req := command(t, "abc", map[string]any{"command": "offer", "call-id": "x", "from-tag": "f", "sdp": "v=0"})
	_, d1 := roundTrip(t, c, req)
	_, d2 := roundTrip(t, c, req)
	if d1["sdp"] != d2["sdp"] || h.count() != 1 {
		t.Fatalf("retransmission ran the offer again: %d offers", h.count())
	}
	// A new cookie is a new command.
	roundTrip(t, c, command(t, "abd", map[string]any{"command": "offer", "call-id": "x", "from-tag": "f", "sdp": "v=0"}))
	if h.count() != 2 {
		t.Fatalf("new cookie: %d offers", h.count())
	}
}

func TestHostileRequests(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h, Options{})
	c := dial(t, s)
	cases := []struct {
		name, raw, reason string
	}{
		{"malformed bencode", "k1 d7:command4:ping", "malformed bencode"},
		{"not a dict", "k2 l4:pinge", "malformed bencode"},
		{"no command", "k3 de", "no command"},
		{"command not a string", "k4 d7:commandi1ee", "command is not a string"},
		{"unknown command", "k5 d7:command6:reboote", `unknown command "reboot"`},
		{"offer without call-id", "k6 d7:command5:offer3:sdp3:v=0e", "no call-id"},
		{"offer without sdp", "k7 d7:call-id1:x7:command5:offere", "no sdp"},
		{"answer without offer", "k8 d7:call-id1:x7:command6:answer8:from-tag1:f3:sdp3:v=06:to-tag1:te", "unknown call-id"},
		{"handler error", "k9 d7:call-id3:bad7:command5:offer8:from-tag1:f3:sdp3:v=0e", "no codec in common"},
		{"bad flags", "k10 d7:call-id1:x7:command5:offer5:flagsi3ee", "flags is not a list"},
		{"bad received-from", "k11 d7:call-id1:x7:command5:offer13:received-froml3:IP43:nopee", "received-from: bad address"},
		{"deep nesting", "k12 d1:x" + strings.Repeat("l", 100) + strings.Repeat("e", 100) + "7:command4:pinge", "malformed bencode"},
	}
	for _, tc := range cases {
		cookie, d := roundTrip(t, c, []byte(tc.raw))
		reason, _ := d["error-reason"].(string)
		if cookie != strings.Fields(tc.raw)[0] || d["result"] != "error" || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: reply %q %v, want error %q", tc.name, cookie, d, tc.reason)
		}
	}
	// A request larger than MaxRequest is refused, not parsed.
	huge := append([]byte("big d3:sdp"), []byte("60000:")...)
	huge = append(huge, bytes.Repeat([]byte("a"), 60000)...)
	cookie, d := roundTrip(t, c, huge)
	if cookie != "big" || d["result"] != "error" || d["error-reason"] != "request too large" {
		t.Errorf("huge request: %q %v", cookie, d)
	}
	// Datagrams without a cookie get nothing; the socket still serves.
	_, _ = c.Write([]byte("nocookie"))
	if _, d := roundTrip(t, c, []byte("after d7:command4:pinge")); d["result"] != "pong" {
		t.Errorf("ping after garbage: %v", d)
	}
}

func TestSourceNotAllowedIsIgnored(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h, Options{Allow: []netip.Prefix{netip.MustParsePrefix("::1/128")}})
	c := dial(t, s) // from 127.0.0.1, which is not allowed
	if _, err := c.Write(command(t, "x", map[string]any{"command": "offer", "call-id": "x", "from-tag": "f", "sdp": "v=0"})); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); s.Dropped() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the datagram was not dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1500)); err == nil {
		t.Fatalf("a source not allowed got a %d-byte reply", n)
	}
	if h.count() != 0 {
		t.Fatal("a source not allowed ran an offer")
	}
}

func TestPerSourceRate(t *testing.T) {
	h := &fakeHandler{}
	s := startServer(t, h, Options{PerSourceRate: 3})
	c := dial(t, s)
	for i := 0; i < 10; i++ {
		_, _ = c.Write([]byte("r" + string(rune('a'+i)) + " d7:command4:pinge"))
	}
	for deadline := time.Now().Add(10 * time.Second); s.Dropped() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no request was dropped over the rate")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FuzzRequest feeds any bytes to the request path (decode, parse,
// dispatch, encode): the reply is always a cookie and a bencoded dictionary.
func FuzzRequest(f *testing.F) {
	f.Add([]byte("d7:call-id1:x7:command5:offer5:flagsl13:trust-address16:codec-strip-PCMAe8:from-tag1:f3:sdp3:v=0e"))
	f.Add([]byte("d5:codecd5:stripl4:PCMAee7:command5:offer13:received-froml3:IP49:127.0.0.1ee"))
	f.Add([]byte("d7:command4:listi5:limiti3ee"))
	s := &Server{h: &fakeHandler{}, log: slog.New(slog.DiscardHandler)}
	src := netip.MustParseAddrPort("127.0.0.1:1")
	f.Fuzz(func(t *testing.T, b []byte) {
		out := s.reply([]byte("c"), b, src)
		if !bytes.HasPrefix(out, []byte("c ")) {
			t.Fatalf("reply %q without the cookie", out)
		}
		d, err := bencode.DecodeDict(out[2:])
		if err != nil {
			t.Fatalf("reply %q: %v", out, err)
		}
		if r := d["result"]; r != "ok" && r != "pong" && r != "error" {
			t.Fatalf("reply %q: result %v", out, r)
		}
	})
}

// TestReplyCacheBounded: however many cookies a proxy sends, the cache
// keeps at most maxCached entries and maxCacheBytes of replies.
func TestReplyCacheBounded(t *testing.T) {
	s := startServer(t, &fakeHandler{}, Options{})
	now := time.Now()
	src := netip.MustParseAddrPort("127.0.0.1:9")
	reply := bytes.Repeat([]byte("x"), 4096)
	for i := 0; i < maxCached+5000; i++ {
		key := cacheKey{src: src, cookie: strings.Repeat("k", 1+i%7) + string(rune('a'+i%26)) + fmt.Sprint(i)}
		s.mu.Lock()
		s.remember(key, &cached{expires: now.Add(time.Minute)}, now)
		s.mu.Unlock()
		s.finish(key, src, reply)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) > maxCached || s.cacheBytes > maxCacheBytes || len(s.order) < len(s.cache) {
		t.Fatalf("cache holds %d entries, %d bytes (order %d)", len(s.cache), s.cacheBytes, len(s.order))
	}
	total := 0
	for _, c := range s.cache {
		total += len(c.reply)
	}
	if total != s.cacheBytes {
		t.Fatalf("cacheBytes %d, replies add up to %d", s.cacheBytes, total)
	}
	// Expired entries go at the next insertion.
	later := now.Add(2 * time.Minute)
	s.remember(cacheKey{src: src, cookie: "late"}, &cached{expires: later.Add(time.Minute)}, later)
	if len(s.cache) != 1 {
		t.Fatalf("%d entries after everything expired, want 1", len(s.cache))
	}
}
