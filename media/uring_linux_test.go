//go:build linux

package media

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/testenv"
)

// senders opens n sockets on loopback, each with its raw sender, and one
// receiving socket.
func senders(t testing.TB, n int) ([]*udpSock, *net.UDPConn) {
	t.Helper()
	var socks []*udpSock
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		s, err := newUDPSock(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.close() })
		socks = append(socks, s)
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = sink.SetReadBuffer(4 << 20)
	t.Cleanup(func() { sink.Close() })
	return socks, sink
}

// TestOutboxSends: datagrams queued on several sockets arrive byte for
// byte from the socket they were queued on, and one queued on a socket
// closed before the flush is not sent (its descriptor may be reused).
func TestOutboxSends(t *testing.T) {
	o, err := newOutbox()
	if err != nil {
		testenv.Missing(t, "no io_uring", err)
	}
	defer o.close()
	socks, sink := senders(t, 4)
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	for round := range 3 {
		want := map[netip.AddrPort][]byte{}
		for i, s := range socks[:3] {
			b := bytes.Repeat([]byte{byte(round*10 + i)}, 100+i)
			if err := o.queue(s.out, b, dst); err != nil {
				t.Fatal(err)
			}
			want[localOf(t, s)] = b
		}
		if round == 2 {
			if err := o.queue(socks[3].out, []byte("after close"), dst); err != nil {
				t.Fatal(err)
			}
			socks[3].close()
		}
		o.flush()
		for range len(want) {
			buf := make([]byte, 2048)
			_ = sink.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if w, ok := want[from]; !ok || !bytes.Equal(buf[:n], w) {
				t.Fatalf("round %d: got %q from %s", round, buf[:n], from)
			}
			delete(want, from)
		}
	}
	_ = sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, from, err := sink.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Fatalf("a send queued on a closed socket went out: %d bytes from %s", n, from)
	}
	for _, s := range socks {
		if r := s.out.refs.Load() &^ sendClosed; r != 0 {
			t.Errorf("sender holds %d references after the flush", r)
		}
	}
}

func localOf(t testing.TB, s *udpSock) netip.AddrPort {
	c, err := s.goConn()
	if err != nil {
		t.Fatal(err)
	}
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// The two ways a round's sends leave: one sendto each, or queued and
// flushed in one io_uring_enter. 16 sockets, as 16 calls' SIP legs.
func BenchmarkRoundSendto16(b *testing.B) { benchRound(b, false) }
func BenchmarkRoundOutbox16(b *testing.B) { benchRound(b, true) }

func benchRound(b *testing.B, ring bool) {
	o, err := newOutbox()
	if err != nil {
		testenv.Missing(b, "no io_uring", err)
	}
	defer o.close()
	socks, sink := senders(b, 16)
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	pkt := make([]byte, 172)
	drain := make([]byte, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, s := range socks {
			if ring {
				_ = o.queue(s.out, pkt, dst)
			} else {
				_ = s.out.sendTo(pkt, dst)
			}
		}
		if ring {
			o.flush()
		}
		if i%8 == 7 {
			b.StopTimer()
			_ = sink.SetReadDeadline(time.Now().Add(time.Millisecond))
			for {
				if _, _, err := sink.ReadFromUDPAddrPort(drain); err != nil {
					break
				}
			}
			b.StartTimer()
		}
	}
}

// legPair is two RTP legs, each latched to a peer of its own: packets
// from a to in are to be forwarded out to b.
func legPair(t *testing.T) (in, out *RTPLeg, a, b *udpPeer) {
	t.Helper()
	ports := testPorts(t, 2)
	in = newTestLeg(t, ports, RTPLegOptions{})
	out = newTestLeg(t, ports, RTPLegOptions{})
	a, b = newUDPPeer(t), newUDPPeer(t)
	in.SetRemote(udpAddr(a.rtp), udpAddr(a.rtcp))
	out.SetRemote(udpAddr(b.rtp), udpAddr(b.rtcp))
	return in, out, a, b
}

// forwardThrough sends n packets from a to in and checks that b receives
// each, byte for byte.
func forwardThrough(t *testing.T, in *RTPLeg, a, b *udpPeer, n uint16, payload string) {
	t.Helper()
	for seq := range n {
		want := mkRTP(t, 0, seq, 160*uint32(seq), 0x5eed, false, []byte(payload))
		udpSend(t, a.rtp, in.LocalAddr(), want)
		got, _ := udpRecv(t, b.rtp)
		if !bytes.Equal(got, want) {
			t.Fatalf("forwarded %x, want %x", got, want)
		}
	}
}

// TestForwardingLeavesInRoundBatches: a packet a loop receives on one SIP
// leg and forwards to another leaves through the loop's outbox, byte for
// byte, while a write from a goroutine of its own goes at once.
func TestForwardingLeavesInRoundBatches(t *testing.T) {
	loops, err := engineLoops()
	if err != nil {
		testenv.Missing(t, "no media loops", err)
	}
	in, out, a, b := legPair(t)
	sentBefore := map[*loop]uint64{}
	for _, lp := range loops {
		if lp.out == nil {
			testenv.Missing(t, "no io_uring", errors.New("a loop has no outbox"))
		}
		sentBefore[lp] = lp.out.sent.Load()
	}
	go func() {
		_ = in.Serve(func(pkt []byte) { _ = out.WriteRTP(pkt) })
	}()
	forwardThrough(t, in, a, b, 5, "through the outbox")
	// The peer can read the last packet before the loop has reaped its
	// completion and counted it: wait a little for the count.
	var batched uint64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		batched = 0
		for _, lp := range loops {
			batched += lp.out.sent.Load() - sentBefore[lp]
		}
		if batched >= 5 || time.Now().After(deadline) {
			break
		}
	}
	if batched < 5 {
		t.Errorf("%d forwarded packets left through a loop's outbox, want 5", batched)
	}
	direct := mkRTP(t, 0, 99, 0, 0x5eed, false, []byte("direct"))
	if err := out.WriteRTP(direct); err != nil {
		t.Fatal(err)
	}
	if got, _ := udpRecv(t, b.rtp); !bytes.Equal(got, direct) {
		t.Fatalf("direct write %x, want %x", got, direct)
	}
}

// TestServedLegHostileDatagrams: on a served leg read through the loop's
// ring, an oversized datagram from the peer is dropped as truncated, one
// from a stranger as unlatched, an empty one as malformed, and the peer's
// next packet still arrives intact.
func TestServedLegHostileDatagrams(t *testing.T) {
	var drops dropLog
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{OnDrop: drops.add})
	p, stranger := newUDPPeer(t), newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	got := make(chan []byte, 8)
	serveInto(leg, got)
	big := mkRTP(t, 0, 1, 160, 0xb16, false, bytes.Repeat([]byte{0xee}, 3000))
	udpSend(t, p.rtp, leg.LocalAddr(), big)
	udpSend(t, stranger.rtp, leg.LocalAddr(), mkRTP(t, 0, 2, 320, 0xbad, false, []byte("stolen")))
	udpSend(t, p.rtp, leg.LocalAddr(), []byte{})
	want := mkRTP(t, 0, 3, 480, 0xb16, false, []byte("after the junk"))
	udpSend(t, p.rtp, leg.LocalAddr(), want)
	select {
	case pkt := <-got:
		if !bytes.Equal(pkt, want) {
			t.Fatalf("served %x, want %x", pkt, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing served")
	}
	if drops.count(DropTruncated) != 1 || drops.count(DropUnlatched) != 1 || drops.count(DropMalformed) != 1 {
		t.Errorf("drops %v, want one truncated, one unlatched, one malformed", drops.reasons)
	}
}

// TestServedSocketsInFileTable: a served leg's RTP socket is in its
// loop's io_uring file table, a packet forwarded between two served legs
// arrives byte for byte through it, and once the legs are closed their
// ports can be bound again: the table kept no socket open.
func TestServedSocketsInFileTable(t *testing.T) {
	loops, err := engineLoops()
	if err != nil {
		testenv.Missing(t, "no media loops", err)
	}
	for _, lp := range loops {
		if lp.out == nil || lp.out.ring.Files() == 0 {
			testenv.Missing(t, "no io_uring file table", errors.New("a loop's ring has none"))
		}
	}
	in, out, a, b := legPair(t)
	done := make(chan error, 2)
	go func() { done <- in.Serve(func(pkt []byte) { _ = out.WriteRTP(pkt) }) }()
	go func() { done <- out.Serve(func([]byte) {}) }()
	forwardThrough(t, in, a, b, 3, "through the file table")
	inTable := func(fd int) bool {
		for _, lp := range loops {
			lp.mu.Lock()
			f := lp.out.file(fd)
			lp.mu.Unlock()
			if f >= 0 {
				return true
			}
		}
		return false
	}
	for _, l := range []*RTPLeg{in, out} {
		if !inTable(l.fd) {
			t.Errorf("served leg %s: its socket is in no loop's file table", l.LocalAddr())
		}
	}
	addrs := []netip.AddrPort{in.LocalAddr(), out.LocalAddr()}
	in.Close()
	out.Close()
	for range 2 {
		<-done
	}
	for _, ap := range addrs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			t.Errorf("port %s still bound after its leg closed: %v", ap, err)
			continue
		}
		c.Close()
	}
}
