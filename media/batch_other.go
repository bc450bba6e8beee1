//go:build !linux

package media

import (
	"errors"
	"net"
	"net/netip"
)

// batchReader is Linux-only (recvmmsg); elsewhere ReadRTP reads one
// datagram per syscall.
type batchReader struct{}

func newBatchReader(*net.UDPConn) *batchReader { return nil }

func (*batchReader) read() ([]byte, netip.AddrPort, bool, error) {
	return nil, netip.AddrPort{}, false, errors.New("batch reads unsupported")
}
