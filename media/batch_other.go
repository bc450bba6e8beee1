//go:build !linux

package media

import (
	"errors"
	"net"
	"net/netip"
)

// batchReader is Linux-only (recvmmsg); elsewhere readers take one
// datagram per syscall.
type batchReader struct{}

func newBatchReader(*net.UDPConn) *batchReader { return nil }

func newBatchReaderSize(*net.UDPConn, int) *batchReader { return nil }

var errNoBatch = errors.New("batch reads unsupported")

func (*batchReader) read() ([]byte, netip.AddrPort, bool, error) {
	return nil, netip.AddrPort{}, false, errNoBatch
}

func (*batchReader) fill() (int, error) { return 0, errNoBatch }

func (*batchReader) at(int) ([]byte, netip.AddrPort, bool) { return nil, netip.AddrPort{}, false }

func (*batchReader) take(int) int { return 0 }

func (*batchReader) size() int { return 0 }

// readBufSize holds any datagram an Ethernet MTU allows, with room to spare.
const readBufSize = 2048

func newShardBatch() *batchReader { return nil }
