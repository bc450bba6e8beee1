package media

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mediarelay/mediarelay/pkg/connlimit"
)

// ICE-TCP (RFC 6544) reaches browsers whose network blocks UDP: the relay
// offers a passive TCP host candidate beside its UDP ones, at a lower
// priority so that UDP wins where it works. The browser connects, sends
// its connectivity checks over the connection in RFC 4571 frames (a
// 16-bit length before each packet), and once one verifies the connection
// is that leg's pair: DTLS records and SRTP arrive and leave on it and go
// through the same leg code as on UDP. Each connection is read by a
// goroutine of its own; this is the fallback path, and a TCP stream needs
// a reader that reassembles frames anyway.

const (
	// tcpCheckTimeout closes a connection that has not completed an ICE
	// check within it: an open socket costs a descriptor and a goroutine.
	tcpCheckTimeout = 5 * time.Second
	// tcpMaxFrame bounds one framed packet: media and DTLS fit with room
	// to spare; a bigger frame is an attack or a protocol error.
	tcpMaxFrame = 4096
	// tcpDeadlineEvery is how often a busy connection's read deadline is
	// pushed back, instead of once per packet.
	tcpDeadlineEvery = time.Second
)

// iceTCP is the passive ICE-TCP listener of the WebRTC port.
type iceTCP struct {
	w    *WebRTC
	ln   net.Listener
	port uint16

	mu    sync.Mutex
	conns map[*tcpPair]struct{}
	wg    sync.WaitGroup
}

// listenICETCP opens the ICE-TCP listener at addr and starts accepting.
// maxConns and perSource cap open connections.
func (w *WebRTC) listenICETCP(addr netip.AddrPort, maxConns, perSource int) (*iceTCP, error) {
	ln, err := net.Listen(bindNetwork("tcp", addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	t := &iceTCP{w: w, port: uint16(ln.Addr().(*net.TCPAddr).Port), conns: map[*tcpPair]struct{}{}}
	t.ln = connlimit.New(ln, "ice_tcp", maxConns, perSource, w.log, nil)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.accept()
	}()
	return t, nil
}

func (t *iceTCP) accept() {
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
		t.mu.Lock()
		t.conns[p] = struct{}{}
		t.mu.Unlock()
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			p.serve()
		}()
	}
}

// close stops accepting and closes every connection.
func (t *iceTCP) close() {
	_ = t.ln.Close()
	t.mu.Lock()
	for p := range t.conns {
		p.close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// sweep closes connections whose leg has ended.
func (t *iceTCP) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p := range t.conns {
		if l := p.leg.Load(); l != nil && l.isClosed() {
			p.close()
		}
	}
}

// tcpPair is one ICE-TCP connection: a candidate pair of at most one leg.
type tcpPair struct {
	t      *iceTCP
	conn   net.Conn
	rc     syscall.RawConn
	remote netip.AddrPort
	leg    atomic.Pointer[WebRTCLeg] // set by the first check that verifies

	wmu     sync.Mutex
	wbuf    []byte // one frame being built
	pending []byte // the unsent tail of a frame the kernel took only part of
	down    bool
	dropped atomic.Uint64 // frames dropped because the connection was backed up
}

func newTCPPair(t *iceTCP, c net.Conn) (*tcpPair, error) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return nil, err
	}
	sc, ok := underlyingConn(c).(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &tcpPair{t: t, conn: c, rc: rc, remote: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()),
		wbuf: make([]byte, 2+tcpMaxFrame), pending: make([]byte, 0, 2+tcpMaxFrame)}, nil
}

// underlyingConn unwraps connlimit's accounting wrapper.
func underlyingConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ Unwrap() net.Conn }); ok {
		return u.Unwrap()
	}
	return c
}

// serve reads frames until the connection fails, is closed, or has not
// verified an ICE check in time; then it lets the leg know.
func (p *tcpPair) serve() {
	defer p.ended()
	p.readFrames(p.conn)
}

// readFrames handles the RFC 4571 frames of stream until it fails or
// breaks the rules.
func (p *tcpPair) readFrames(stream io.Reader) {
	r := bufio.NewReaderSize(stream, 2*tcpMaxFrame)
	buf := make([]byte, tcpMaxFrame)
	var hdr [2]byte
	deadline := time.Now().Add(tcpCheckTimeout)
	_ = p.conn.SetReadDeadline(deadline)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n == 0 || n > tcpMaxFrame {
			p.t.w.log.Debug("ice-tcp: bad frame length; closing", "from", p.remote.String(), "len", n)
			return
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return
		}
		now := time.Now()
		p.handle(buf[:n], now)
		// Verified: the leg's consent timeout ends a silent browser; the
		// deadline only reaps a connection nobody reads from any more.
		if consent := p.t.w.opts.ConsentTimeout; p.leg.Load() != nil && deadline.Sub(now) < consent-tcpDeadlineEvery {
			deadline = now.Add(consent)
			_ = p.conn.SetReadDeadline(deadline)
		}
	}
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

// ended runs when the reader stops: the connection is closed and, if it
// was its leg's selected pair, the leg fails (a browser that still has a
// working pair nominates it again before this matters).
func (p *tcpPair) ended() {
	p.close()
	p.t.mu.Lock()
	delete(p.t.conns, p)
	p.t.mu.Unlock()
	if l := p.leg.Load(); l != nil {
		if d := l.dst.Load(); d != nil && d.tcp == p {
			l.fail(FailICETCPLost, errors.New("ice-tcp connection closed"))
		}
	}
}

func (p *tcpPair) close() {
	p.wmu.Lock()
	p.down = true
	p.wmu.Unlock()
	_ = p.conn.Close()
}

// send writes b as one RFC 4571 frame without ever blocking: the media
// path must not wait on a slow browser. A frame the kernel cannot take at
// all is dropped, as a full UDP buffer would drop it; one it takes only
// part of is finished before anything else is sent, so the stream's
// framing stays intact.
func (p *tcpPair) send(b []byte) error {
	if len(b) > tcpMaxFrame {
		return fmt.Errorf("ice-tcp: %d-byte packet does not fit a frame", len(b))
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.down {
		return net.ErrClosed
	}
	if len(p.pending) > 0 {
		n, err := p.write(p.pending)
		p.pending = p.pending[:copy(p.pending, p.pending[n:])]
		if err != nil {
			return err
		}
		if len(p.pending) > 0 {
			p.dropped.Add(1)
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
	switch {
	case n == 0:
		p.dropped.Add(1)
	case n < len(frame):
		p.pending = append(p.pending[:0], frame[n:]...)
	}
	return nil
}

// write makes one non-blocking send and returns what the kernel took; a
// full buffer is not an error.
func (p *tcpPair) write(b []byte) (int, error) {
	var (
		n    int
		serr error
	)
	err := p.rc.Write(func(fd uintptr) bool {
		n, serr = unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true
	})
	if err != nil {
		return 0, err
	}
	if errors.Is(serr, unix.EAGAIN) {
		return 0, nil
	}
	if serr != nil {
		return 0, fmt.Errorf("ice-tcp send to %s: %w", p.remote, serr)
	}
	return n, nil
}
