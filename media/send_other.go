//go:build !linux

package media

import (
	"net"
	"net/netip"
)

// udpSender writes through net.UDPConn where raw sends are not built.
type udpSender struct{ conn *net.UDPConn }

func newUDPSender(c *net.UDPConn) *udpSender { return &udpSender{conn: c} }

func (s *udpSender) sendTo(b []byte, dst netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(b, dst)
	return err
}

func (s *udpSender) shut() {}
