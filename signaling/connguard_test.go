package signaling

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// closedByPeer waits (up to 20 s) for c to be closed by the relay.
func closedByPeer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the relay did not close the connection", what)
		}
		return
	}
}

func sipOptions(branch string) string {
	return "OPTIONS sip:relay SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK" + branch +
		"\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:relay>\r\nCall-ID: " + branch + "@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// optionsOK sends OPTIONS on c and reports whether 200 came back.
func optionsOK(c net.Conn, branch string) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, sipOptions(branch)); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SIP/2.0 200")
}

// TestSIPTCPHygiene: a TCP connection that sends nothing, or dribbles a
// message it never finishes, is closed; one that completes messages stays;
// connections over the per-source cap are closed at accept and a slot
// freed is usable again.
func TestSIPTCPHygiene(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.SIP.TCPMessageTimeout = 300 * time.Millisecond
		c.SIP.MaxConnsPerSource = 4
	})
	addr := r.SIPTCPAddr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	silent := dial()
	closedByPeer(t, silent, "silent connection")

	slow := dial()
	stop := make(chan struct{})
	go func() { // slowloris: a byte at a time, never a whole message
		msg := sipOptions("slow")
		for i := 0; i < len(msg)-4; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := slow.Write([]byte{msg[i]}); err != nil {
				return
			}
		}
	}()
	closedByPeer(t, slow, "slowloris connection")
	close(stop)

	good := dial()
	if !optionsOK(good, "good1") {
		t.Fatal("OPTIONS over TCP not answered")
	}
	// Past the message timeout, a connection between messages is kept.
	waitFor(t, "the silent and slow connections reaped", 10*time.Second, func() bool {
		return metricValue(metricsText(t, r), "mediarelay_connections_refused_total", `listener="sip_stream",reason="idle"`) >= 2
	})
	if !optionsOK(good, "good2") {
		t.Fatal("a connection that completed a message was closed while idle between messages")
	}

	// good holds 1 of 4 slots; three more fit, the fifth is closed at accept.
	var held []net.Conn
	for i := range 3 {
		c := dial()
		if !optionsOK(c, fmt.Sprint("cap", i)) {
			t.Fatalf("connection %d under the cap not served", i+2)
		}
		held = append(held, c)
	}
	over := dial()
	closedByPeer(t, over, "connection over the per-source cap")
	if v := metricValue(metricsText(t, r), "mediarelay_connections_refused_total", `listener="tcp",reason="per_source"`); v < 1 {
		t.Errorf("per-source refusals not counted: %v", v)
	}
	held[0].Close()
	waitFor(t, "a freed slot to be usable", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		return optionsOK(c, "again")
	})
}

// rawWS is a minimal browser-like WebSocket client: it masks its frames
// and, unless mute is set, answers pings.
type rawWS struct {
	c     net.Conn
	br    *bufio.Reader
	text  chan string
	pings atomic.Int64
	mute  atomic.Bool
	done  chan struct{}
}

func dialRawWS(t *testing.T, r *Relay) *rawWS {
	t.Helper()
	c, err := net.Dial("tcp", r.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: " + r.HTTPAddr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	w := &rawWS{c: c, br: br, text: make(chan string, 16), done: make(chan struct{})}
	go w.read()
	return w
}

func (w *rawWS) read() {
	defer close(w.done)
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(b[:]))
		case 127:
			return // no SIP message here is that large
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.br, payload); err != nil {
			return
		}
		switch h[0] & 0x0f {
		case 0x9:
			w.pings.Add(1)
			if !w.mute.Load() {
				_ = w.send(0xA, payload)
			}
		case 0x1:
			select {
			case w.text <- string(payload):
			default:
			}
		}
	}
}

func (w *rawWS) send(op byte, payload []byte) error {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	f := []byte{0x80 | op}
	switch {
	case len(payload) < 126:
		f = append(f, 0x80|byte(len(payload)))
	default:
		f = append(f, 0x80|126, byte(len(payload)>>8), byte(len(payload)))
	}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	_, err := w.c.Write(f)
	return err
}

// request sends a SIP request and returns its final response.
func (w *rawWS) request(t *testing.T, msg string) *sip.Response {
	t.Helper()
	if err := w.send(0x1, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case s := <-w.text:
			m, err := sip.ParseMessage([]byte(s))
			if err != nil {
				t.Fatalf("unparsable reply: %v", err)
			}
			if res, ok := m.(*sip.Response); ok && res.StatusCode >= 200 {
				return res
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no response over the WebSocket")
		}
	}
}

// registerMsg is a REGISTER of user (with auth as Authorization, if any).
func registerMsg(user string, cseq int, auth string) string {
	s := "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS raw.invalid;branch=z9hG4bK" + fmt.Sprint(cseq, "reg", user, time.Now().UnixNano()) +
		"\r\nFrom: <sip:" + user + "@127.0.0.1>;tag=r1\r\nTo: <sip:" + user + "@127.0.0.1>\r\nCall-ID: reg-" + user +
		"\r\nCSeq: " + fmt.Sprint(cseq) + " REGISTER\r\nContact: <sip:" + user + "@raw.invalid;transport=ws>\r\nExpires: 300\r\nMax-Forwards: 70\r\n"
	if auth != "" {
		s += "Authorization: " + auth + "\r\n"
	}
	return s + "Content-Length: 0\r\n\r\n"
}

// answer401 computes the Authorization answering res's MD5 challenge.
func answer401(t *testing.T, res *sip.Response, user, password string) string {
	t.Helper()
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER: %d, want 401", res.StatusCode)
	}
	var chal *digest.Challenge
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		if c, err := digest.ParseChallenge(h.Value()); err == nil && strings.EqualFold(c.Algorithm, "MD5") {
			chal = c
		}
	}
	if chal == nil {
		t.Fatal("no MD5 challenge")
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:127.0.0.1", Username: user, Password: password, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	return cred.String()
}

// register registers user over the raw WebSocket with digest and returns
// the Authorization it sent.
func (w *rawWS) register(t *testing.T, user, password string) string {
	t.Helper()
	auth := answer401(t, w.request(t, registerMsg(user, 1, "")), user, password)
	if res := w.request(t, registerMsg(user, 2, auth)); res.StatusCode != 200 {
		t.Fatalf("REGISTER with credentials: %d", res.StatusCode)
	}
	return auth
}

// TestDigestReplay: a captured REGISTER Authorization replayed on another
// WebSocket, or re-sent unchanged on the same one, gets a fresh challenge
// (stale=true on the same connection), which the rightful client answers.
func TestDigestReplay(t *testing.T) {
	r := startRelay(t, withUsers("alice", "wonderland"))
	victim := dialRawWS(t, r)
	captured := victim.register(t, "alice", "wonderland")

	attacker := dialRawWS(t, r)
	res := attacker.request(t, registerMsg("alice", 3, captured))
	if res.StatusCode != 401 {
		t.Fatalf("replay on another WebSocket: %d, want 401", res.StatusCode)
	}
	if r.Registered("alice") != 1 {
		t.Fatal("the replay registered a binding")
	}

	res = victim.request(t, registerMsg("alice", 4, captured))
	if res.StatusCode != 401 {
		t.Fatalf("same Authorization re-sent on its own WebSocket: %d, want 401", res.StatusCode)
	}
	if h := res.GetHeader("WWW-Authenticate"); h == nil || !strings.Contains(h.Value(), "stale=true") {
		t.Errorf("re-sent Authorization not answered with stale=true: %v", h)
	}
	if res := victim.request(t, registerMsg("alice", 5, answer401(t, res, "alice", "wonderland"))); res.StatusCode != 200 {
		t.Fatalf("answering the fresh challenge: %d", res.StatusCode)
	}
	if v := metricValue(metricsText(t, r), "mediarelay_register_rejected_total", `reason="replay"`); v != 1 {
		t.Errorf("replays counted: %v, want 1", v)
	}
}

// TestWebSocketHygiene: a WebSocket with no registration and no call is
// closed after the idle timeout; a registered one is pinged and kept while
// it answers, and closed (its registration with it) once it stops.
func TestWebSocketHygiene(t *testing.T) {
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.HTTP.WSIdleTimeout = 300 * time.Millisecond
		c.HTTP.WSPingInterval = 200 * time.Millisecond
	}))

	idle := dialRawWS(t, r)
	select {
	case <-idle.done:
	case <-time.After(20 * time.Second):
		t.Fatal("an idle WebSocket was not closed")
	}

	reg := dialRawWS(t, r)
	reg.register(t, "alice", "wonderland")
	waitFor(t, "several pings answered", 20*time.Second, func() bool { return reg.pings.Load() >= 5 })
	select {
	case <-reg.done:
		t.Fatal("a registered WebSocket answering pings was closed")
	default:
	}
	if r.Registered("alice") != 1 {
		t.Fatal("registration lost while pings were answered")
	}
	reg.mute.Store(true)
	select {
	case <-reg.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a WebSocket not answering pings was not closed")
	}
	waitFor(t, "registration to end with its WebSocket", 5*time.Second, func() bool { return r.Registered("alice") == 0 })
	text := metricsText(t, r)
	for _, reason := range []string{"idle", "ping_timeout"} {
		if v := metricValue(text, "mediarelay_connections_refused_total", `listener="ws",reason="`+reason+`"`); v < 1 {
			t.Errorf("ws %s closes not counted", reason)
		}
	}
}
