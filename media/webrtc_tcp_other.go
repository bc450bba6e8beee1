//go:build !linux

package media

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpIO is an ICE-TCP connection read by a goroutine of its own, where no
// media loop can serve it.
type tcpIO struct {
	rc syscall.RawConn
}

// adopt keeps c's raw connection for non-blocking writes.
func (p *tcpPair) adopt(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	p.rc = rc
	return nil
}

// start reads the connection on a goroutine until it fails or is closed.
func (p *tcpPair) start() error {
	p.t.wg.Add(1)
	go func() {
		defer p.t.wg.Done()
		defer p.close()
		p.readFrames(p.conn)
	}()
	return nil
}

// release marks the connection down under wmu, so no send is using it,
// and closes it, which ends its reader.
func (p *tcpPair) release() {
	p.wmu.Lock()
	p.down = true
	p.out, p.outHead = nil, 0
	p.wmu.Unlock()
	_ = p.conn.Close()
}

// write makes one non-blocking send and returns what the kernel took; a
// full buffer is not an error. Caller holds wmu.
func (p *tcpPair) write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var (
		n    int
		serr error
	)
	err := p.rc.Write(func(fd uintptr) bool {
		n, serr = unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_DONTWAIT)
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

// wantWritable does nothing here: without a loop to watch the socket, the
// backlog is finished by the next send.
func (p *tcpPair) wantWritable(bool) {}
