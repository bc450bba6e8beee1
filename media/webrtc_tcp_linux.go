//go:build linux

package media

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// tcpLoopBuf is each media loop's receive buffer for ICE-TCP: many
	// frames per read when a browser's stream has backed up.
	tcpLoopBuf = 64 << 10
	// tcpReadsPerRound bounds the reads of one connection in one round,
	// so a flooding peer cannot starve the loop's other sockets; the
	// socket is level-triggered and comes back next round.
	tcpReadsPerRound = 4
)

// tcpIO is an ICE-TCP connection served by a media loop. The connection
// is taken out of Go's netpoller as soon as it is accepted, before any
// check: most connections a public port sees never verify, and a
// goroutine parked on each would cost more than the loop's slot does;
// one path also leaves one teardown to get right. The janitor's sweep
// closes those that do not verify in time.
type tcpIO struct {
	fd   int // duplicate descriptor, owned here; -1 once closed
	lp   *loop
	slot int32
	// rx holds the start of a frame that a read cut short, between
	// rounds; only the loop's goroutine touches it.
	rx []byte
	// polling is set while the loop watches the socket for writability
	// (there is a backlog); written under wmu, read by the loop.
	polling atomic.Bool
}

// adopt keeps a duplicate of c's descriptor and closes c, which takes the
// socket out of Go's netpoller; the connlimit wrapper stays open until the
// connection ends, holding its source's slot.
func (p *tcpPair) adopt(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	fd, err := socketFD(sc)
	if err == nil {
		fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	_ = c.Close()
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	p.fd = fd
	p.rx = make([]byte, 0, 2+tcpMaxFrame)
	return nil
}

// start puts the connection on a media loop.
func (p *tcpPair) start() error {
	lp, err := pickLoop()
	if err != nil {
		return err
	}
	p.lp = lp // before add: ready may run, and send, at once
	if err := lp.addAt(p.fd, p, &p.slot); err != nil {
		p.lp = nil
		return err
	}
	return nil
}

// release takes the socket off its loop (waiting for a round in
// progress) and closes it once no send is in flight.
func (p *tcpPair) release() {
	if p.lp != nil {
		p.lp.remove(p.slot, p.fd)
	}
	p.closeFD()
}

// closeOnLoop is close from the connection's own ready call, where the
// loop holds its lock.
func (p *tcpPair) closeOnLoop(lp *loop) {
	if !p.closing.CompareAndSwap(false, true) {
		return
	}
	lp.removeHeld(p.slot, p.fd)
	p.closeFD()
	p.ended()
}

// closeFD closes the descriptor under wmu, so no send is using it.
func (p *tcpPair) closeFD() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.down = true
	p.out, p.outHead = nil, 0
	if p.fd >= 0 {
		_ = unix.Close(p.fd)
		p.fd = -1
	}
}

// ready is the loop's call: finish a backlog the socket can now take,
// then read what has arrived, handling every complete frame. Frames are
// handled from the loop's buffer, so what they cause to be forwarded
// leaves with the round's other sends.
func (p *tcpPair) ready(lp *loop, now time.Time) {
	if p.polling.Load() {
		p.flush()
	}
	buf := lp.tcpIn
	k := copy(buf, p.rx)
	for range tcpReadsPerRound {
		n, err := p.recv(buf[k:])
		if err == unix.EAGAIN {
			break
		}
		if err != 0 || n == 0 {
			if err != 0 && err != unix.ECONNRESET {
				p.t.w.log.Debug("ice-tcp: read failed; closing", "from", p.remote.String(), "err", err)
			}
			p.closeOnLoop(lp)
			return
		}
		p.lastIn.Store(now.UnixNano())
		drained := k+n < len(buf)
		used, ok := p.deframe(buf[:k+n], now)
		if !ok {
			p.closeOnLoop(lp)
			return
		}
		k = copy(buf, buf[used:k+n])
		if drained {
			break
		}
	}
	p.rx = append(p.rx[:0], buf[:k]...)
}

// flush sends what of the backlog the socket takes now.
func (p *tcpPair) flush() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.down || p.backlog() == 0 {
		return
	}
	if err := p.flushLocked(); err != nil {
		p.t.w.log.Debug("ice-tcp: send failed", "to", p.remote.String(), "err", err)
	}
}

// recv reads once without blocking.
func (p *tcpPair) recv(b []byte) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(p.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, 0, 0)
	return int(n), e
}

// write makes one non-blocking send and returns what the kernel took; a
// full buffer is not an error. Caller holds wmu and the socket is open.
func (p *tcpPair) write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(p.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	switch e {
	case 0:
		return int(n), nil
	case unix.EAGAIN:
		return 0, nil
	default:
		return 0, fmt.Errorf("ice-tcp send to %s: %w", p.remote, e)
	}
}

// wantWritable has the loop call ready when the socket can take more, or
// stop doing so. Caller holds wmu.
func (p *tcpPair) wantWritable(on bool) {
	if p.polling.Load() == on || p.lp == nil {
		return
	}
	if err := p.lp.watch(p.slot, p.fd, on); err != nil {
		p.t.w.log.Debug("ice-tcp: cannot watch the socket", "from", p.remote.String(), "err", err)
		return
	}
	p.polling.Store(on)
}
