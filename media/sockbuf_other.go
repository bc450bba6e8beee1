//go:build !linux

package media

import "net"

// setReadBuffer raises a socket's receive buffer to n bytes, as far as the
// system allows.
func setReadBuffer(c *net.UDPConn, n int) error { return c.SetReadBuffer(n) }
