// Package connlimit guards stream listeners on a public address: caps on
// open connections in total and per source, and accept loops that survive
// descriptor exhaustion.
package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Accept back-off after an error (EMFILE, ENFILE, ECONNABORTED...): from
// minAcceptBackoff doubling to maxAcceptBackoff, as net/http does.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// Listener is a listener that never stops on an accept error (it backs
// off and retries until closed: a relay that runs out of descriptors must
// come back when they are freed) and caps open connections in total and
// per source IP, closing the excess at accept.
type Listener struct {
	net.Listener
	name      string
	max       int
	perSource int
	log       *slog.Logger
	onRefused func(reason string) // counts refusals

	mu    sync.Mutex
	total int
	bySrc map[string]int
}

// New guards l. name labels its log lines; onRefused, if set, is called
// with "total" or "per_source" for each connection closed at accept.
func New(l net.Listener, name string, max, perSource int, log *slog.Logger, onRefused func(string)) *Listener {
	return &Listener{Listener: l, name: name, max: max, perSource: perSource, log: log, onRefused: onRefused, bySrc: map[string]int{}}
}

// Accept returns the next admitted connection; it fails only once the
// listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			if delay == 0 {
				delay = minAcceptBackoff
				l.log.Warn("accept failed; backing off", "listener", l.name, "err", err)
			} else {
				delay = min(2*delay, maxAcceptBackoff)
			}
			time.Sleep(delay)
			continue
		}
		if delay != 0 {
			l.log.Info("accepting again", "listener", l.name)
			delay = 0
		}
		ip := sourceIP(c.RemoteAddr())
		if reason := l.admit(ip); reason != "" {
			if l.onRefused != nil {
				l.onRefused(reason)
			}
			l.log.Debug("connection refused", "listener", l.name, "reason", reason, "source", ip)
			_ = c.Close()
			continue
		}
		return &conn{Conn: c, l: l, ip: ip}, nil
	}
}

// admit counts a connection from ip, or returns why it may not open.
func (l *Listener) admit(ip string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		return "total"
	case l.bySrc[ip] >= l.perSource:
		return "per_source"
	}
	l.total++
	l.bySrc[ip]++
	return ""
}

func (l *Listener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.bySrc[ip]--; l.bySrc[ip] <= 0 {
		delete(l.bySrc, ip)
	}
}

// conn gives its slot back when closed.
type conn struct {
	net.Conn
	l    *Listener
	ip   string
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}

// sourceIP is the IP part of a connection's remote address.
func sourceIP(a net.Addr) string {
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// Unwrap returns the accepted connection, for its socket.
func (c *conn) Unwrap() net.Conn { return c.Conn }
