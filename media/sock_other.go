//go:build !linux

package media

import (
	"net"
)

// newUDPSock keeps c: without media loops every socket is read through
// Go's netpoller.
func newUDPSock(c *net.UDPConn) (*udpSock, error) {
	return &udpSock{fd: -1, out: newUDPSender(c), conn: c}, nil
}

func connFromFD(int) (*net.UDPConn, error) { return nil, net.ErrClosed }

func closeFD(int) error { return nil }
