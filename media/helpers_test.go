package media

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// Test port ranges sit in 10000-15999: below the kernel's ephemeral range
// (32768+), where any socket of a test running beside us may land, and
// apart from the ranges the signaling tests (16000-19999) and the demo
// (20000-39999) use. The allocator skips busy ports anyway.
var (
	portMu   sync.Mutex
	nextBase = 10000 + (os.Getpid()%150)*40
)

// testPorts returns an allocator over a fresh range of n pairs on loopback.
func testPorts(t testing.TB, pairs int) *PortAllocator {
	t.Helper()
	portMu.Lock()
	base := nextBase
	nextBase += 2 * pairs
	if nextBase > 15900 {
		nextBase = 10000
	}
	portMu.Unlock()
	a, err := NewPortAllocator("127.0.0.1", base, base+2*pairs-1)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// dropLog records OnDrop reasons.
type dropLog struct {
	mu      sync.Mutex
	reasons []string
}

func (d *dropLog) add(r string) {
	d.mu.Lock()
	d.reasons = append(d.reasons, r)
	d.mu.Unlock()
}

func (d *dropLog) count(r string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, x := range d.reasons {
		if x == r {
			n++
		}
	}
	return n
}

func (d *dropLog) all() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reasons)
}

func newTestLeg(t testing.TB, ports *PortAllocator, o RTPLegOptions) *RTPLeg {
	t.Helper()
	o.Ports = ports
	l, err := NewRTPLeg(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// udpPeer is a raw UDP endpoint standing in for the far end.
type udpPeer struct {
	rtp, rtcp *net.UDPConn
}

func newUDPPeer(t testing.TB) *udpPeer {
	t.Helper()
	p := &udpPeer{rtp: udpListen(t), rtcp: udpListen(t)}
	return p
}

func udpListen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func udpAddr(c *net.UDPConn) netip.AddrPort {
	return unmap(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

func rtcpAddrOf(l *RTPLeg) netip.AddrPort {
	return netip.AddrPortFrom(l.LocalAddr().Addr(), l.LocalAddr().Port()+1)
}

func mkRTP(t testing.TB, pt uint8, seq uint16, ts, ssrc uint32, marker bool, payload []byte) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc, Marker: marker}, Payload: payload}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func udpSend(t testing.TB, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// recv reads one datagram with a generous deadline (a failsafe against a
// hung test, not a timing assertion).
func udpRecv(t testing.TB, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	return buf[:n], unmap(from)
}

// readLeg reads one packet from a leg with the same failsafe deadline.
func readLegRTP(t testing.TB, l *RTPLeg) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	l.pair.rtp.setReadDeadline(time.Now().Add(10 * time.Second))
	defer l.pair.rtp.setReadDeadline(time.Time{})
	n, err := l.ReadRTP(buf)
	if err != nil {
		t.Fatalf("leg read: %v", err)
	}
	return buf[:n]
}

// eventually polls cond; the deadline only keeps a broken test from hanging.
func pollUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGoroutines polls until the goroutine count falls back to base.
func waitGoroutinesBelow(t testing.TB, base int) {
	t.Helper()
	pollUntil(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
}

func isNetClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// TestMain starts the media loops first: they live as long as the process,
// so tests that count goroutines must not see them appear.
func TestMain(m *testing.M) {
	_, _ = engineLoops()
	os.Exit(m.Run())
}
