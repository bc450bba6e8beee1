//go:build !linux

package benchmarks

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// The load client's engine is epoll, timerfd and raw UDP descriptors:
// Linux only. Elsewhere the package builds, and NewClient says why it
// cannot run.
var errEngineUnsupported = errors.New("the load client needs Linux (epoll, timerfd)")

type udpSock struct{ port int }

func openUDPSock() (*udpSock, error)                        { return nil, errEngineUnsupported }
func (s *udpSock) sendTo(b []byte, to netip.AddrPort) error { return errEngineUnsupported }
func (s *udpSock) connect(to netip.AddrPort) error          { return errEngineUnsupported }
func (s *udpSock) send(b []byte) error                      { return errEngineUnsupported }
func (s *udpSock) recv(b []byte) (int, netip.AddrPort, int64, bool) {
	return 0, netip.AddrPort{}, 0, false
}
func (s *udpSock) close() error { return nil }
func (s *udpSock) fdNum() int   { return -1 }

type poller struct{}

func newPoller(tick time.Duration) (*poller, error) { return nil, errEngineUnsupported }
func (p *poller) add(fd int) error                  { return errEngineUnsupported }
func (p *poller) del(fd int)                        {}
func (p *poller) hush(fd int) error                 { return errEngineUnsupported }
func (p *poller) pollQuiet() int                    { return 0 }
func (p *poller) quietFD(i int) int                 { return -1 }
func (p *poller) wait() int                         { time.Sleep(100 * time.Millisecond); return 0 }
func (p *poller) readyFD(i int) int                 { return -1 }
func (p *poller) ticks() uint64                     { return 0 }
func (p *poller) isTimer(fd int) bool               { return false }
func (p *poller) close()                            {}

func gettid() int { return 0 }

type tcpSock struct {
	port   int
	remote netip.AddrPort
}

func dialTCP(ctx context.Context, to netip.AddrPort) (*tcpSock, error) {
	return nil, errEngineUnsupported
}
func (s *tcpSock) send(b []byte) error       { return errEngineUnsupported }
func (s *tcpSock) fill() (int, int64, error) { return 0, 0, errEngineUnsupported }
func (s *tcpSock) next() ([]byte, error)     { return nil, errEngineUnsupported }
func (s *tcpSock) close() error              { return nil }
func (s *tcpSock) fdNum() int                { return -1 }

type batcher struct{}

func newBatcher(sent *atomic.Uint64) (*batcher, error) { return nil, errEngineUnsupported }
func (b *batcher) close()                              {}
func (b *batcher) sendBuf() []byte                     { return nil }
func (b *batcher) queueSend(fd int, pkt []byte)        {}
func (b *batcher) flushSends()                         {}
func (b *batcher) addFile(fd int)                      {}
func (b *batcher) removeFile(fd int)                   {}
func (b *batcher) queueRecv(fd int, c *call) bool      { return false }
func (b *batcher) receive(sink *shard, now time.Time)  {}

type rtpBatch struct{}

func newRTPBatch(*net.UDPConn) (*rtpBatch, error) { return nil, errEngineUnsupported }
func (*rtpBatch) read() (int, error)              { return 0, errEngineUnsupported }
func (*rtpBatch) at(int) ([]byte, netip.AddrPort, int64, bool) {
	return nil, netip.AddrPort{}, 0, false
}
func (*rtpBatch) queue([]byte, netip.AddrPort) error { return errEngineUnsupported }
func (*rtpBatch) flush() error                       { return errEngineUnsupported }

// slotSize is the load client's datagram buffer size (ring_linux.go).
const slotSize = 2048
