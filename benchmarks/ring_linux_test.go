//go:build linux

package benchmarks

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/testenv"
)

// engineRingPair is enginePair with the shard's io_uring batcher, as
// NewClient gives it where io_uring works.
func engineRingPair(t testing.TB) (*shard, *call, *net.UDPConn) {
	t.Helper()
	sh, c, peer := enginePair(t)
	b, err := newBatcher(&sh.cl.sent)
	if err != nil {
		testenv.Missing(t, "no io_uring", err)
	}
	sh.ring = b
	t.Cleanup(b.close)
	b.addFile(c.sock.fd) // as open does for a shard with a ring
	return sh, c, peer
}

// TestRingFileTable: a call's socket is read and written through its slot
// in the ring's file table, and closing the call empties the slot, so the
// socket is really closed: its port can be bound again. With the slot
// left set, the table would keep the socket (and its port) open.
func TestRingFileTable(t *testing.T) {
	sh, c, peer := engineRingPair(t)
	fd, port := c.sock.fd, c.sock.port
	if len(sh.ring.fixed) == 0 {
		// A seccomp policy without io_uring_register leaves the ring without a
		// file table; the ring then names sockets by descriptor, which
		// TestRingDeliversBytesAndStamps covers. Nothing here to test.
		t.Skip("io_uring_register refused here: sockets are named by descriptor")
	}
	if !sh.ring.inTable(fd) {
		t.Fatalf("the call's socket %d is not in the file table", fd)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	sh.ring.queueSend(fd, []byte("through the slot"))
	sh.ring.flushSends()
	buf := make([]byte, 64)
	if n, err := peer.Read(buf); err != nil || string(buf[:n]) != "through the slot" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	if _, err := peer.WriteToUDPAddrPort([]byte("back"), to); err != nil {
		t.Fatal(err)
	}
	var sink recordSink
	for deadline := time.Now().Add(5 * time.Second); len(sink.got) == 0 && time.Now().Before(deadline); {
		sh.ring.queueRecv(fd, c)
		sh.ring.receive(&sink, time.Now())
		time.Sleep(time.Millisecond)
	}
	if len(sink.got) != 1 || string(sink.got[0].pkt) != "back" {
		t.Fatalf("read %d datagrams through the slot, want the one sent", len(sink.got))
	}

	sh.mu.Lock()
	sh.closeLocked(c)
	sh.mu.Unlock()
	if sh.ring.inTable(fd) {
		t.Fatal("the closed call's socket is still in the file table")
	}
	again, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatalf("port %d of the closed call: %v (still held by the file table?)", port, err)
	}
	again.Close()
}

// recorded is a datagram a batch of receives handed on.
type recorded struct {
	c    *call
	pkt  []byte
	from netip.AddrPort
	at   int64
}

type recordSink struct{ got []recorded }

func (r *recordSink) arrived(c *call, pkt []byte, from netip.AddrPort, at int64, _ time.Time) {
	r.got = append(r.got, recorded{c, bytes.Clone(pkt), from, at})
}

// TestRingDeliversBytesAndStamps: datagrams queued for the ring leave
// byte for byte and in order, and those read through it arrive byte for
// byte from their sender, each with the kernel's arrival stamp (between
// the send and the read) so delays stay exact.
func TestRingDeliversBytesAndStamps(t *testing.T) {
	sh, c, peer := engineRingPair(t)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))

	// Out: more than one batch, so a flush happens on the way.
	var want [][]byte
	for i := range sendSlots + 5 {
		b := []byte(fmt.Sprintf("out %03d", i))
		want = append(want, b)
		sh.ring.queueSend(c.sock.fd, b)
	}
	before := sh.cl.sent.Load()
	sh.ring.flushSends()
	if got := sh.cl.sent.Load() - before; got != 5 {
		t.Errorf("last flush counted %d sent, want 5", got)
	}
	buf := make([]byte, 2048)
	for i, w := range want {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("packet %d: %q, want %q", i, buf[:n], w)
		}
	}

	// In: two datagrams wait in the socket; each round reads one.
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.sock.port))
	t0 := time.Now().UnixNano()
	in := [][]byte{[]byte("in one"), bytes.Repeat([]byte{0xa5}, 1200)}
	for _, b := range in {
		if _, err := peer.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	var sink recordSink
	for range 3 { // the third finds nothing: -EAGAIN, nothing handed on
		if !sh.ring.queueRecv(c.sock.fd, c) {
			t.Fatal("no receive slot")
		}
		sh.ring.receive(&sink, time.Now())
	}
	t1 := time.Now().UnixNano()
	if len(sink.got) != len(in) {
		t.Fatalf("read %d datagrams, want %d", len(sink.got), len(in))
	}
	from := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	for i, r := range sink.got {
		if !bytes.Equal(r.pkt, in[i]) || r.c != c || r.from != from {
			t.Errorf("datagram %d: %d bytes from %s for %p, want %d from %s for %p", i, len(r.pkt), r.from, r.c, len(in[i]), from, c)
		}
		if r.at == 0 || r.at < t0-int64(time.Millisecond) || r.at > t1 {
			t.Errorf("datagram %d: arrival stamp %d, want between %d and %d", i, r.at, t0, t1)
		}
	}
}

// TestRingTickEchoes: through the shard's tick with a ring, frames leave
// as SRTP the peer can echo, and the echoes are read on a later tick,
// decrypted, counted and timed: each round-trip sample is positive and
// shorter than the test.
func TestRingTickEchoes(t *testing.T) {
	sh, c, peer := engineRingPair(t)
	sh.cl.SetMeasuring(true)
	// Consent is not under test: no check is due, and none is missed.
	c.lastCheck, c.nextCheck = time.Now(), time.Now().Add(time.Hour)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.sock.port))
	start := time.Now()
	buf := make([]byte, 2048)
	const frames = 3
	for range frames {
		sent := sh.cl.sent.Load()
		sh.mu.Lock()
		sh.tick(1)
		sh.mu.Unlock()
		if sh.cl.sent.Load() != sent+1 {
			t.Fatalf("a tick sent %d frames, want 1", sh.cl.sent.Load()-sent)
		}
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peer.WriteToUDPAddrPort(buf[:n], to); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); sh.cl.recv.Load() < frames && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		sh.mu.Lock()
		sh.drain()
		sh.mu.Unlock()
	}
	if got := sh.cl.recv.Load(); got != frames {
		t.Fatalf("read %d echoes, want %d", got, frames)
	}
	_, rtt := c.takeDelays()
	if len(rtt) != frames {
		t.Fatalf("%d round-trip samples, want %d", len(rtt), frames)
	}
	for _, ms := range rtt {
		if ms <= 0 || ms > float64(time.Since(start).Milliseconds()+1) {
			t.Errorf("round trip %.3f ms, want within (0, %v]", ms, time.Since(start))
		}
	}
}

// TestRingPacketPathsAllocateNothing: with the ring, a frame built,
// encrypted, queued and flushed, and a datagram read through the ring,
// decrypted and counted, allocate nothing.
func TestRingPacketPathsAllocateNothing(t *testing.T) {
	sh, c, peer := engineRingPair(t)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if a := testing.AllocsPerRun(200, func() {
		sh.sendFrame(c)
		sh.flushSends()
	}); a != 0 {
		t.Errorf("send through the ring: %v allocations per packet, want 0", a)
	}
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.sock.port))
	buf := make([]byte, 2048)
	for range 201 {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peer.WriteToUDPAddrPort(buf[:n], to); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	before := sh.cl.recv.Load()
	a := testing.AllocsPerRun(200, func() {
		sh.mu.Lock()
		sh.ring.queueRecv(c.sock.fd, c)
		sh.ring.receive(sh, time.Now())
		sh.mu.Unlock()
	})
	if a != 0 {
		t.Errorf("read through the ring: %v allocations per packet, want 0", a)
	}
	if got := sh.cl.recv.Load() - before; got != 201 {
		t.Errorf("read %d packets, want 201", got)
	}
}
