package media

import (
	"net"
	"syscall"
)

// setReadBuffer raises a socket's receive buffer to n bytes. It tries
// SO_RCVBUFFORCE first, which may exceed net.core.rmem_max but needs
// CAP_NET_ADMIN, then falls back to the capped SO_RCVBUF.
func setReadBuffer(c *net.UDPConn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err == nil && serr == nil {
		return nil
	}
	return c.SetReadBuffer(n)
}
