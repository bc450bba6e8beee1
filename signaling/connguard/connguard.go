// Package connguard keeps the relay's stream listeners from being held
// open: a Reaper closes SIP TCP/TLS connections that do not complete
// messages in time or go idle (SIPStreamListener, with a SIP framer that
// follows Content-Length), and browsers' WebSockets that carry no
// registration or call, or stop answering pings (NewWSConn).
package connguard

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Reaper closes connections that break the relay's rules on
// idleness, checking every tick.
type Reaper struct {
	mu    sync.Mutex
	conns map[reapable]struct{}
}

// reapable is a connection the reaper checks: expired reports why it
// must close (a metric reason), or "".
type reapable interface {
	expired(now time.Time) string
	Close() error
}

// NewReaper is a Reaper with no connections; Run starts it.
func NewReaper() *Reaper { return &Reaper{conns: map[reapable]struct{}{}} }

func (r *Reaper) add(c reapable) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.mu.Unlock()
}

func (r *Reaper) remove(c reapable) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// Run checks every tick until done closes; onReap hears each close.
func (r *Reaper) Run(tick time.Duration, done <-chan struct{}, onReap func(reason string)) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			r.mu.Lock()
			conns := make([]reapable, 0, len(r.conns))
			for c := range r.conns {
				conns = append(conns, c)
			}
			r.mu.Unlock()
			// expired may take other locks (calls, registrations): not under r.mu.
			for _, c := range conns {
				if reason := c.expired(now); reason != "" {
					r.remove(c)
					// Counted before the close, so that whoever sees the
					// connection gone also sees why in the metrics.
					onReap(reason)
					_ = c.Close()
				}
			}
		}
	}
}

// ReaperTick is how often connections are checked: a quarter of the
// shortest timeout, between 50 ms and 1 s.
func ReaperTick(timeouts ...time.Duration) time.Duration {
	d := time.Second
	for _, t := range timeouts {
		d = min(d, t/4)
	}
	return max(d, 50*time.Millisecond)
}

// sipStreamListener wraps accepted SIP TCP/TLS connections so that the
// reaper closes those that do not complete messages.
type sipStreamListener struct {
	net.Listener
	reaper           *Reaper
	msgTimeout, idle time.Duration
	log              *slog.Logger
}

// NewSIPStreamListener wraps l so that reaper closes a connection that
// takes longer than msgTimeout to complete a SIP message, or is idle for
// idle.
func NewSIPStreamListener(l net.Listener, reaper *Reaper, msgTimeout, idle time.Duration, log *slog.Logger) net.Listener {
	return &sipStreamListener{Listener: l, reaper: reaper, msgTimeout: msgTimeout, idle: idle, log: log}
}

func (l *sipStreamListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	sc := &sipStreamConn{Conn: c, l: l, accepted: now}
	sc.lastIO.Store(now)
	l.reaper.add(sc)
	return sc, nil
}

// sipStreamConn tracks message boundaries of what a SIP peer sends.
type sipStreamConn struct {
	net.Conn
	l        *sipStreamListener
	accepted int64

	mu       sync.Mutex // guards framer (sipgo reads from one goroutine; the reaper reads state)
	framer   sipFramer
	msgStart int64 // when the current unfinished message began; 0 between messages
	messages int
	lastIO   atomic.Int64 // unix ns of the last read or write
	once     sync.Once
}

func (c *sipStreamConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		now := time.Now().UnixNano()
		c.lastIO.Store(now)
		c.mu.Lock()
		wasIn := c.framer.inMessage()
		done, ferr := c.framer.feed(b[:n])
		c.messages += done
		switch {
		case c.framer.inMessage() && (done > 0 || !wasIn):
			c.msgStart = now // a new message began in this read
		case !c.framer.inMessage():
			c.msgStart = 0
		}
		c.mu.Unlock()
		if ferr != nil {
			c.l.log.Debug("SIP stream framing error; closing", "remote", c.RemoteAddr().String(), "err", ferr)
			_ = c.Close()
			// sipgo parses what was read and then meets the closed connection.
		}
	}
	return n, err
}

func (c *sipStreamConn) Write(b []byte) (int, error) {
	c.lastIO.Store(time.Now().UnixNano())
	return c.Conn.Write(b)
}

func (c *sipStreamConn) Close() error {
	c.once.Do(func() { c.l.reaper.remove(c) })
	return c.Conn.Close()
}

func (c *sipStreamConn) expired(now time.Time) string {
	t := now.UnixNano()
	c.mu.Lock()
	msgStart, messages := c.msgStart, c.messages
	c.mu.Unlock()
	switch {
	case messages == 0 && t-c.accepted > int64(c.l.msgTimeout):
		return "idle"
	case msgStart != 0 && t-msgStart > int64(c.l.msgTimeout):
		return "idle"
	case t-c.lastIO.Load() > int64(c.l.idle):
		return "idle"
	}
	return ""
}

// wsConn is a browser's SIP WebSocket as the relay guards it: closed when
// it has had no registration and no call for the idle timeout; while it
// has one, pinged, and closed when it sends nothing back for two ping
// intervals. It sits under sipgo's WebSocket framing and inserts ping
// frames only between the frames sipgo writes.
type wsConn struct {
	net.Conn
	remote   string
	idle     time.Duration
	interval time.Duration
	busy     func(remote string) bool
	reaper   *Reaper

	lastRead atomic.Int64 // unix ns
	lastBusy atomic.Int64
	lastPing atomic.Int64

	wmu      sync.Mutex
	upgraded bool  // the HTTP 101 has been written
	pending  int64 // payload bytes of the frame being written
	once     sync.Once
}

// NewWSConn guards a browser's SIP WebSocket c: busy says whether its
// remote address has a registration or a call.
func NewWSConn(c net.Conn, idle, interval time.Duration, busy func(remote string) bool, reaper *Reaper) net.Conn {
	w := &wsConn{Conn: c, remote: c.RemoteAddr().String(), idle: idle, interval: interval, busy: busy, reaper: reaper}
	now := time.Now().UnixNano()
	w.lastRead.Store(now)
	w.lastBusy.Store(now)
	w.lastPing.Store(now)
	reaper.add(w)
	return w
}

func (c *wsConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

// Write passes sipgo's bytes on, following frame boundaries: gobwas/ws
// writes a frame's header and its payload in separate calls.
func (c *wsConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case !c.upgraded:
		c.upgraded = bytes.Contains(b, []byte("\r\n\r\n"))
	case c.pending > 0:
		c.pending -= int64(len(b))
	default:
		hdr, length := wsFrameHeader(b)
		c.pending = max(0, length-int64(len(b)-hdr))
	}
	return c.Conn.Write(b)
}

// wsFrameHeader reads the header size and payload length of a frame
// header the relay writes.
func wsFrameHeader(b []byte) (hdr int, length int64) {
	if len(b) < 2 {
		return len(b), 0
	}
	hdr, length = 2, int64(b[1]&0x7f)
	switch length {
	case 126:
		if len(b) >= 4 {
			hdr, length = 4, int64(binary.BigEndian.Uint16(b[2:4]))
		}
	case 127:
		if len(b) >= 10 {
			hdr, length = 10, int64(binary.BigEndian.Uint64(b[2:10])&(1<<62-1))
		}
	}
	if b[1]&0x80 != 0 {
		hdr += 4
	}
	return hdr, length
}

// ping writes an empty ping frame if no frame is half written.
func (c *wsConn) ping() {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if !c.upgraded || c.pending > 0 {
		return
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Conn.Write([]byte{0x89, 0x00})
	_ = c.Conn.SetWriteDeadline(time.Time{})
}

func (c *wsConn) Close() error {
	c.once.Do(func() { c.reaper.remove(c) })
	return c.Conn.Close()
}

func (c *wsConn) expired(now time.Time) string {
	t := now.UnixNano()
	if !c.busy(c.remote) {
		if t-c.lastBusy.Load() > int64(c.idle) {
			return "idle"
		}
		return ""
	}
	c.lastBusy.Store(t)
	if t-c.lastRead.Load() > 2*int64(c.interval) {
		return "ping_timeout"
	}
	if t-c.lastPing.Load() >= int64(c.interval) {
		c.lastPing.Store(t)
		c.ping()
	}
	return ""
}
