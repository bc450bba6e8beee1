// Package wsdemux shares the relay's HTTP port between its web server and
// SIP over WebSocket: it reads each connection's request head, refuses
// WebSocket upgrades from foreign Origins, and hands SIP WebSockets and
// plain HTTP to two listeners.
package wsdemux

import (
	"bufio"
	"bytes"
	"github.com/mediarelay/mediarelay/signaling/logsafe"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Demux splits one TCP listener between the HTTP server and sipgo's
// WebSocket transport. sipgo upgrades any connection it is given without
// looking at the path, so the request is read here: a WebSocket upgrade to
// /ws, or to any path with the "sip" subprotocol, goes to SIP; everything
// else to HTTP.
type Demux struct {
	l    net.Listener
	ws   *chanListener
	http *chanListener
	// OnWSClose, when set, hears the remote address of each SIP WebSocket
	// that ends (registrations made over it end too).
	OnWSClose func(remote string)
	// AllowedOrigins are http.allowed_origins: besides the relay's own
	// origin and no Origin at all, the only pages that may upgrade.
	AllowedOrigins []string
	// OnRefused, when set, hears each connection refused, by reason.
	OnRefused func(reason string)
	// WrapWS, when set, wraps each SIP WebSocket connection (idle and
	// ping supervision).
	WrapWS func(net.Conn) net.Conn
	Log    *slog.Logger
}

// New is a Demux of l; Serve starts it.
func New(l net.Listener) *Demux {
	return &Demux{l: l, ws: newChanListener(l.Addr()), http: newChanListener(l.Addr())}
}

// SIP is the listener of SIP WebSocket connections, for sipgo.
func (d *Demux) SIP() net.Listener { return d.ws }

// HTTP is the listener of everything else, for the HTTP server.
func (d *Demux) HTTP() net.Listener { return d.http }

// Serve accepts until the listener closes.
func (d *Demux) Serve() {
	defer d.ws.Close()
	defer d.http.Close()
	for {
		c, err := d.l.Accept()
		if err != nil {
			return
		}
		go d.route(c)
	}
}

func (d *Demux) route(c net.Conn) {
	// A client that never sends its request line must not hold a goroutine.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	head, err := peekHead(br)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, r: br}
	if isWebSocketSIP(head) {
		if origin, ok := originAllowed(head, d.AllowedOrigins); !ok {
			d.refuse(c, "origin", "403 Forbidden")
			if d.Log != nil {
				d.Log.Debug("websocket upgrade from a foreign origin refused", "origin", logsafe.Truncate(origin, 100), "remote", c.RemoteAddr().String())
			}
			return
		}
		var wc net.Conn = pc
		if d.WrapWS != nil {
			wc = d.WrapWS(pc)
		}
		if d.OnWSClose != nil {
			d.ws.push(&closeNotifyConn{Conn: wc, onClose: d.OnWSClose})
			return
		}
		d.ws.push(wc)
		return
	}
	d.http.push(pc)
}

// refuse answers an HTTP request with status and closes the connection.
func (d *Demux) refuse(c net.Conn, reason, status string) {
	if d.OnRefused != nil {
		d.OnRefused(reason)
	}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte("HTTP/1.1 " + status + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	_ = c.Close()
}

// headerValue returns the value of the first header called name in a
// request head (request line, then "Name: value" lines).
func headerValue(head []byte, name string) (string, bool) {
	_, rest, _ := bytes.Cut(head, []byte("\r\n"))
	for _, h := range bytes.Split(rest, []byte("\r\n")) {
		k, v, ok := bytes.Cut(h, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return string(bytes.TrimSpace(v)), true
		}
	}
	return "", false
}

// originAllowed reports whether a WebSocket upgrade may proceed: it has no
// Origin (not a browser), its Origin is the relay's own (its host and port
// are the request's Host), or is listed in allowed ("*" allows any). It
// also returns the Origin, for logging.
func originAllowed(head []byte, allowed []string) (string, bool) {
	origin, ok := headerValue(head, "Origin")
	if !ok {
		return "", true
	}
	norm := strings.ToLower(strings.TrimSuffix(origin, "/"))
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), norm) {
			return origin, true
		}
	}
	u, err := url.Parse(norm)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return origin, false
	}
	host, _ := headerValue(head, "Host")
	return origin, host != "" && hostPortEqual(u.Host, strings.ToLower(host), u.Scheme)
}

// hostPortEqual compares an origin's host[:port] with a Host header,
// treating a missing port as the scheme's default.
func hostPortEqual(a, b, scheme string) bool {
	def := "80"
	if scheme == "https" {
		def = "443"
	}
	withPort := func(h string) string {
		if _, _, err := net.SplitHostPort(h); err == nil {
			return h
		}
		return net.JoinHostPort(strings.Trim(h, "[]"), def)
	}
	return withPort(a) == withPort(b)
}

// peekHead returns the request head (up to the blank line) without
// consuming it. It asks for one byte more than is buffered each time, so it
// never waits for bytes the client has not sent.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		n := br.Buffered() + 1
		if n > br.Size() {
			b, _ := br.Peek(br.Size())
			return b, nil // oversized head: let HTTP answer it
		}
		if _, err := br.Peek(n); err != nil {
			return nil, err
		}
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i], nil
		}
	}
}

func isWebSocketSIP(head []byte) bool {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[0]) != "GET" {
		return false
	}
	path, _, _ := bytes.Cut(f[1], []byte("?"))
	upgrade, sipProto := false, false
	for _, h := range bytes.Split(rest, []byte("\r\n")) {
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		k, v = bytes.TrimSpace(k), bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Upgrade")):
			upgrade = bytes.EqualFold(v, []byte("websocket"))
		case bytes.EqualFold(k, []byte("Sec-WebSocket-Protocol")):
			for _, p := range bytes.Split(v, []byte(",")) {
				sipProto = sipProto || bytes.EqualFold(bytes.TrimSpace(p), []byte("sip"))
			}
		}
	}
	return upgrade && (string(path) == "/ws" || sipProto)
}

// prefixConn reads through the bufio.Reader that peeked the request head.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// chanListener is a net.Listener fed by the demux.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(a net.Addr) *chanListener {
	return &chanListener{addr: a, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept waits for the next routed connection.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept.
func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

// Addr is the shared listener's address.
func (l *chanListener) Addr() net.Addr { return l.addr }

// closeNotifyConn tells OnWSClose when a WebSocket connection ends.
type closeNotifyConn struct {
	net.Conn
	once    sync.Once
	onClose func(remote string)
}

func (c *closeNotifyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.notify()
	}
	return n, err
}

func (c *closeNotifyConn) Close() error {
	c.notify()
	return c.Conn.Close()
}

func (c *closeNotifyConn) notify() {
	c.once.Do(func() {
		if c.onClose != nil {
			c.onClose(c.Conn.RemoteAddr().String())
		}
	})
}
