package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mediarelay/mediarelay/pkg/connlimit"
)

// ICE-TCP (RFC 6544) reaches browsers whose network blocks UDP: the relay
// offers a passive TCP host candidate beside its UDP ones, at a lower
// priority so that UDP wins where it works. The browser connects, sends
// its connectivity checks over the connection in RFC 4571 frames (a
// 16-bit length before each packet), and once one verifies the connection
// is that leg's pair: DTLS records and SRTP arrive and leave on it and go
// through the same leg code as on UDP.
//
// Where media loops run (Linux), an accepted connection is taken out of
// Go's netpoller and served by a loop like a UDP socket
// (webrtc_tcp_linux.go): no goroutine per connection, frames handled on
// the loop's goroutine. Elsewhere each connection has a reading goroutine
// (webrtc_tcp_other.go). Either way, the janitor's sweep reaps
// connections that never verify or fall silent.

const (
	// tcpCheckTimeout closes a connection that has not completed an ICE
	// check within it: an open socket costs a descriptor.
	tcpCheckTimeout = 5 * time.Second
	// tcpMaxFrame bounds one framed packet: media and DTLS fit with room
	// to spare; a bigger frame is an attack or a protocol error.
	tcpMaxFrame = 4096
	// tcpOutMax bounds what a connection keeps that the kernel has not
	// taken yet; frames beyond it are dropped whole, as a full UDP buffer
	// would drop datagrams. 64 KiB is over a second of a G.711 call.
	tcpOutMax = 64 << 10
	// tcpReadBuf is a goroutine reader's buffer: room for a frame and a
	// partial one.
	tcpReadBuf = 2 * (2 + tcpMaxFrame)
)

// iceTCP is the passive ICE-TCP listener of the WebRTC port.
type iceTCP struct {
	w    *WebRTC
	ln   net.Listener
	port uint16

	mu    sync.Mutex
	conns map[*tcpPair]struct{}
	// wg counts the accept loop and every connection until its teardown
	// (and its reader, where it has one) is done.
	wg       sync.WaitGroup
	accepted chan struct{} // closed when the accept loop has returned
}

// listenICETCP opens the ICE-TCP listener at addr and starts accepting.
// maxConns and perSource cap open connections.
func (w *WebRTC) listenICETCP(addr netip.AddrPort, maxConns, perSource int) (*iceTCP, error) {
	ln, err := net.Listen(bindNetwork("tcp", addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	t := &iceTCP{w: w, port: uint16(ln.Addr().(*net.TCPAddr).Port), conns: map[*tcpPair]struct{}{},
		accepted: make(chan struct{})}
	t.ln = connlimit.New(ln, "ice_tcp", maxConns, perSource, w.log, nil)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.accept()
	}()
	return t, nil
}

func (t *iceTCP) accept() {
	defer close(t.accepted)
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return // closed: connlimit retries every other error
		}
		p, err := newTCPPair(t, c)
		if err != nil {
			t.w.log.Debug("ice-tcp: connection refused", "err", err)
			_ = c.Close()
			continue
		}
		t.wg.Add(1)
		if err := p.start(); err != nil {
			t.w.log.Debug("ice-tcp: connection not served", "from", p.remote.String(), "err", err)
			p.close()
			continue
		}
		// Published once started; one that has already closed has
		// forgotten itself, and forget and this both run under t.mu.
		t.mu.Lock()
		if !p.closing.Load() {
			t.conns[p] = struct{}{}
		}
		t.mu.Unlock()
	}
}

// close stops accepting, closes every connection and waits for them.
func (t *iceTCP) close() {
	_ = t.ln.Close()
	<-t.accepted // no connection is being started
	for _, p := range t.collect(func(*tcpPair, time.Time) bool { return true }) {
		p.close()
	}
	t.wg.Wait()
}

// sweep closes connections whose leg has ended, that have not verified a
// check in time, or that the browser stopped sending on.
func (t *iceTCP) sweep() {
	for _, p := range t.collect((*tcpPair).expired) {
		p.close()
	}
}

// collect returns the connections that match. Closing happens outside
// t.mu: a connection closing on its media loop takes t.mu to forget
// itself while the loop is held, so t.mu must never wait on a loop.
func (t *iceTCP) collect(match func(*tcpPair, time.Time) bool) []*tcpPair {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*tcpPair
	for p := range t.conns {
		if match(p, now) {
			out = append(out, p)
		}
	}
	return out
}

// forget takes p out of the set.
func (t *iceTCP) forget(p *tcpPair) {
	t.mu.Lock()
	delete(t.conns, p)
	t.mu.Unlock()
}

// tcpPair is one ICE-TCP connection: a candidate pair of at most one leg.
type tcpPair struct {
	t      *iceTCP
	conn   net.Conn // as accepted: closing it gives back the source's slot (connlimit)
	remote netip.AddrPort
	leg    atomic.Pointer[WebRTCLeg] // set by the first check that verifies
	born   time.Time
	lastIn atomic.Int64 // unix ns of the last bytes read, for the sweep

	closing atomic.Bool // the first close does the teardown; others return

	// wmu serialises sends (from the loop, the DTLS handshake, RTCP
	// reports, STUN answers) and the descriptor's close: a send holds
	// it across one non-blocking write, so the socket is never closed
	// under one. It is the only lock the TCP media send path takes.
	wmu     sync.Mutex
	wbuf    []byte // one frame being built
	out     []byte // frames the kernel has not taken, from outHead; made on first need
	outHead int
	down    bool
	dropped atomic.Uint64 // frames dropped because the connection was backed up

	tcpIO // how the socket is read and written here
}

func newTCPPair(t *iceTCP, c net.Conn) (*tcpPair, error) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return nil, fmt.Errorf("ice-tcp: remote address: %w", err)
	}
	now := time.Now()
	p := &tcpPair{t: t, conn: c, remote: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), born: now,
		wbuf: make([]byte, 2+tcpMaxFrame)}
	p.lastIn.Store(now.UnixNano())
	if err := p.adopt(underlyingConn(c)); err != nil {
		return nil, fmt.Errorf("ice-tcp: %w", err)
	}
	return p, nil
}

// underlyingConn unwraps connlimit's accounting wrapper.
func underlyingConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ Unwrap() net.Conn }); ok {
		return u.Unwrap()
	}
	return c
}

// expired reports whether the sweep should close p: its leg has ended,
// it has not verified a check within tcpCheckTimeout, or, verified, no
// byte has come for the consent timeout (the leg's own consent check
// ends a silent browser; this only reaps a connection nobody uses).
func (p *tcpPair) expired(now time.Time) bool {
	l := p.leg.Load()
	switch {
	case l == nil:
		return now.Sub(p.born) > tcpCheckTimeout
	case l.isClosed():
		return true
	default:
		return now.Sub(time.Unix(0, p.lastIn.Load())) > p.t.w.opts.ConsentTimeout
	}
}

// readFrames handles the RFC 4571 frames of stream until it fails or
// breaks the rules: a goroutine's reader, where no loop serves the
// connection, and the fuzzer's way in.
func (p *tcpPair) readFrames(stream io.Reader) {
	buf := make([]byte, tcpReadBuf)
	k := 0
	for {
		n, err := stream.Read(buf[k:])
		if n > 0 {
			now := time.Now()
			p.lastIn.Store(now.UnixNano())
			used, ok := p.deframe(buf[:k+n], now)
			if !ok {
				return
			}
			k = copy(buf, buf[used:k+n])
		}
		if err != nil {
			return
		}
	}
}

// deframe handles every complete frame at the start of b and returns how
// many bytes they took; what is left is the start of a frame. ok is false
// on a frame length that breaks the rules: the connection must close.
func (p *tcpPair) deframe(b []byte, now time.Time) (used int, ok bool) {
	for len(b)-used >= 2 {
		n := int(binary.BigEndian.Uint16(b[used:]))
		if n == 0 || n > tcpMaxFrame {
			p.t.w.log.Debug("ice-tcp: bad frame length; closing", "from", p.remote.String(), "len", n)
			return used, false
		}
		if len(b)-used < 2+n {
			break
		}
		p.handle(b[used+2:used+2+n], now)
		used += 2 + n
	}
	return used, true
}

// handle demultiplexes one frame as the shard does a datagram (RFC 7983),
// except that until a check verifies only STUN is read at all.
func (p *tcpPair) handle(pkt []byte, now time.Time) {
	l := p.leg.Load()
	switch b := pkt[0]; {
	case b < 4:
		cl, resp, nominated := p.t.w.check(pkt, p.remote)
		if cl == nil || (l != nil && cl != l) {
			return // one connection carries one leg
		}
		if err := p.send(resp); err != nil {
			return
		}
		if cl.isClosed() {
			return
		}
		p.leg.Store(cl)
		cl.checked(legDest{tcp: p, addr: p.remote}, nominated, now)
	case l == nil:
	case b >= 20 && b <= 63:
		l.dtlsRecord(pkt)
	case b >= 128 && b <= 191:
		l.media(pkt, now)
	}
}

// close ends the connection, from any goroutine but its media loop's:
// the first call tears it down, later ones return at once.
func (p *tcpPair) close() {
	if p.closing.CompareAndSwap(false, true) {
		p.release()
		p.ended()
	}
}

// ended runs once the socket is released: the connection is forgotten,
// its source's slot given back and, if it was its leg's selected pair,
// the leg fails (a browser that still has a working pair nominates it
// again before this matters).
func (p *tcpPair) ended() {
	_ = p.conn.Close()
	p.t.forget(p)
	if l := p.leg.Load(); l != nil {
		if d := l.dst.Load(); d != nil && d.tcp == p {
			l.fail(FailICETCPLost, errors.New("ice-tcp connection closed"))
		}
	}
	p.t.wg.Done()
}

// send writes b as one RFC 4571 frame without ever blocking: the media
// path must not wait on a slow browser. What the kernel does not take is
// kept, whole frames in order, up to tcpOutMax, and finished when the
// socket drains; a frame that does not fit is dropped, as a full UDP
// buffer would drop it, so the stream's framing stays intact.
func (p *tcpPair) send(b []byte) error {
	if len(b) > tcpMaxFrame {
		return fmt.Errorf("ice-tcp: %d-byte packet does not fit a frame", len(b))
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.down {
		return net.ErrClosed
	}
	if p.backlog() > 0 {
		if err := p.flushLocked(); err != nil {
			return err
		}
		if p.backlog() > 0 {
			p.enqueue(b)
			return nil
		}
	}
	frame := p.wbuf[:2+len(b)]
	binary.BigEndian.PutUint16(frame, uint16(len(b)))
	copy(frame[2:], b)
	n, err := p.write(frame)
	if err != nil {
		return err
	}
	if n < len(frame) {
		p.keep(frame[n:])
	}
	return nil
}

// backlog is how many bytes wait to be sent. Caller holds wmu.
func (p *tcpPair) backlog() int { return len(p.out) - p.outHead }

// enqueue frames b behind the backlog, or drops it when it does not fit.
// Caller holds wmu.
func (p *tcpPair) enqueue(b []byte) {
	if p.backlog()+2+len(b) > tcpOutMax {
		p.dropped.Add(1)
		return
	}
	p.makeRoom(2 + len(b))
	p.out = binary.BigEndian.AppendUint16(p.out, uint16(len(b)))
	p.out = append(p.out, b...)
}

// keep saves the unsent tail of a frame the kernel took only part of, and
// asks to be told when the socket can take more. Caller holds wmu and
// the backlog is empty.
func (p *tcpPair) keep(tail []byte) {
	if p.out == nil {
		p.out = make([]byte, 0, tcpOutMax)
	}
	p.out = append(p.out[:0], tail...)
	p.outHead = 0
	p.wantWritable(true)
}

// makeRoom moves the backlog to the start of out when n more bytes would
// not fit after it, so out never grows past tcpOutMax. Caller holds wmu.
func (p *tcpPair) makeRoom(n int) {
	if len(p.out)+n <= cap(p.out) {
		return
	}
	p.out = p.out[:copy(p.out, p.out[p.outHead:])]
	p.outHead = 0
}

// flushLocked sends as much of the backlog as the kernel takes now. Caller
// holds wmu.
func (p *tcpPair) flushLocked() error {
	n, err := p.write(p.out[p.outHead:])
	p.outHead += n
	if p.backlog() == 0 {
		p.out, p.outHead = p.out[:0], 0
		p.wantWritable(false)
	}
	return err
}
