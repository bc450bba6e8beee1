//go:build linux

package media

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// newUDPSock takes c's socket out of Go's netpoller: it keeps a duplicate
// descriptor and closes c, whose close unregisters it from the poller.
func newUDPSock(c *net.UDPConn) (*udpSock, error) {
	fd, err := socketFD(c)
	if err == nil {
		fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("media socket: %w", err)
	}
	c.Close()
	out, err := newRawSender(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("media socket: %w", err)
	}
	return &udpSock{fd: fd, out: out}, nil
}

// connFromFD makes a *net.UDPConn on a duplicate of fd.
func connFromFD(fd int) (*net.UDPConn, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("media socket: %w", err)
	}
	f := os.NewFile(uintptr(d), "media-udp")
	pc, err := net.FilePacketConn(f)
	f.Close() // FilePacketConn made its own duplicate
	if err != nil {
		return nil, fmt.Errorf("media socket: %w", err)
	}
	c, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("media socket: not UDP")
	}
	return c, nil
}

func closeFD(fd int) error {
	if fd < 0 {
		return nil
	}
	return unix.Close(fd)
}
