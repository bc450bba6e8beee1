package media

import (
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// serveInto runs leg.Serve on its own goroutine, sending a copy of each
// packet to got, and returns Serve's result channel.
func serveInto(leg *RTPLeg, got chan<- []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- leg.Serve(func(pkt []byte) {
			select {
			case got <- append([]byte(nil), pkt...):
			default:
			}
		})
	}()
	return done
}

// TestRTPLegServeHandsOver: a served leg delivers the latched peer's
// packets byte for byte and drops an intruder's; PauseReads ends Serve
// with a deadline error, packets that arrive meanwhile wait in the socket
// for the next Serve, and Close ends Serve with net.ErrClosed.
func TestRTPLegServeHandsOver(t *testing.T) {
	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{})
	p := newUDPPeer(t)
	intruder := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	got := make(chan []byte, 64)
	done := serveInto(leg, got)

	udpSend(t, intruder.rtp, leg.LocalAddr(), mkRTP(t, 0, 1, 160, 0xbad, false, []byte("stolen")))
	want := mkRTP(t, 0, 2, 320, 0x600d, false, []byte("first"))
	udpSend(t, p.rtp, leg.LocalAddr(), want)
	select {
	case pkt := <-got:
		if !bytes.Equal(pkt, want) {
			t.Fatalf("served %x, want %x", pkt, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing served")
	}

	if err := leg.PauseReads(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("paused Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PauseReads did not end Serve")
	}
	if err := leg.Serve(func([]byte) {}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Serve on a paused leg: %v", err)
	}
	udpSend(t, p.rtp, leg.LocalAddr(), mkRTP(t, 0, 3, 480, 0x600d, false, []byte("kept")))
	if err := leg.ResumeReads(); err != nil {
		t.Fatal(err)
	}
	done = serveInto(leg, got)
	select {
	case pkt := <-got:
		if !bytes.HasSuffix(pkt, []byte("kept")) {
			t.Fatalf("after resume served %x", pkt)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the packet sent while paused was lost")
	}
	if s := leg.Stats(); s.PacketsIn != 2 || s.Dropped != 1 {
		t.Errorf("stats %+v, want 2 in and the intruder's packet dropped", s)
	}

	leg.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve after Close returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Serve")
	}
	if err := leg.WriteRTP(want); err == nil {
		t.Error("a write to a closed leg succeeded")
	}
}

// TestRTPLegServeManyLegsOneLoop: more legs than loops, each served, each
// gets only its own peer's packets.
func TestRTPLegServeManyLegsOneLoop(t *testing.T) {
	const n = 12
	ports := testPorts(t, n)
	type served struct {
		leg  *RTPLeg
		peer *udpPeer
		got  chan []byte
	}
	var all []served
	for range n {
		leg := newTestLeg(t, ports, RTPLegOptions{})
		p := newUDPPeer(t)
		leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
		s := served{leg, p, make(chan []byte, 8)}
		serveInto(leg, s.got)
		all = append(all, s)
	}
	for round := range 3 {
		for i, s := range all {
			udpSend(t, s.peer.rtp, s.leg.LocalAddr(), mkRTP(t, 0, uint16(round+1), 160, uint32(100+i), false, []byte{byte(i), byte(round)}))
		}
		for i, s := range all {
			select {
			case pkt := <-s.got:
				if SSRC(pkt) != uint32(100+i) || !bytes.HasSuffix(pkt, []byte{byte(i), byte(round)}) {
					t.Fatalf("leg %d round %d served %x", i, round, pkt)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("leg %d round %d: nothing served", i, round)
			}
		}
	}
}

// TestInjectTakesPacketsPlaces: packets injected into a served leg are
// delivered, one each, in the place of the next packets the peer sends,
// which the leg still counts as received; then the peer's own packets
// come through again. The same holds for ReadRTP.
func TestInjectTakesPacketsPlaces(t *testing.T) {
	check := func(t *testing.T, serve bool) {
		leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{})
		p := newUDPPeer(t)
		leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
		got := make(chan []byte, 8)
		if serve {
			serveInto(leg, got)
		} else {
			go func() {
				buf := make([]byte, 2048)
				for {
					n, err := leg.ReadRTP(buf)
					if err != nil {
						return
					}
					got <- append([]byte(nil), buf[:n]...)
				}
			}()
		}
		ev1 := mkRTP(t, 101, 1, 0, 0xd7f, true, []byte{5, 10, 0, 160})
		ev2 := mkRTP(t, 101, 2, 0, 0xd7f, false, []byte{5, 0x8a, 0, 160})
		leg.Inject([][]byte{ev1, ev2})
		var audio [][]byte
		for seq := range uint16(3) {
			a := mkRTP(t, 0, 100+seq, 160*uint32(seq), 0xa0d10, false, []byte("audio"))
			audio = append(audio, a)
			udpSend(t, p.rtp, leg.LocalAddr(), a)
		}
		for i, want := range [][]byte{ev1, ev2, audio[2]} {
			select {
			case pkt := <-got:
				if !bytes.Equal(pkt, want) {
					t.Fatalf("packet %d: %x, want %x", i, pkt, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("packet %d never came", i)
			}
		}
		if n := leg.Stats().PacketsIn; n != 3 {
			t.Errorf("leg counted %d packets in, want the 3 that arrived", n)
		}
	}
	t.Run("served", func(t *testing.T) { check(t, true) })
	t.Run("ReadRTP", func(t *testing.T) { check(t, false) })
}

// flushCounter is a Stage that hands each packet to w and counts its
// flushes.
type flushCounter struct {
	w       *chanWriter
	flushes atomic.Int32
}

func (s *flushCounter) Process(pkt []byte)  { _ = s.w.WriteRTP(pkt) }
func (s *flushCounter) Flush()              { s.flushes.Add(1) }
func (s *flushCounter) Position() StreamPos { return StreamPos{} }
func (s *flushCounter) Resume(StreamPos)    {}

// TestPathStartKeepsNoGoroutine: paths started on RTP legs forward their
// peers' packets byte for byte with no goroutine of their own while the
// call lasts, and when a leg closes its path's stage is flushed and done
// gets net.ErrClosed, once.
func TestPathStartKeepsNoGoroutine(t *testing.T) {
	const n = 12
	ports := testPorts(t, n)
	legs := make([]*RTPLeg, n)
	peers := make([]*udpPeer, n)
	for i := range legs {
		legs[i] = newTestLeg(t, ports, RTPLegOptions{})
		peers[i] = newUDPPeer(t)
		legs[i].SetRemote(udpAddr(peers[i].rtp), udpAddr(peers[i].rtcp))
	}
	base := runtime.NumGoroutine()
	stages := make([]*flushCounter, n)
	done := make(chan error, 2*n)
	for i, l := range legs {
		stages[i] = &flushCounter{w: &chanWriter{out: make(chan rtp.Packet, 4)}}
		NewPath(stages[i]).Start(l, func(err error) { done <- err })
	}
	if got := runtime.NumGoroutine(); got > base {
		t.Errorf("%d goroutines with %d paths started, %d before", got, n, base)
	}
	for i, l := range legs {
		want := mkRTP(t, 0, uint16(i), 160*uint32(i), 0x5000+uint32(i), false, []byte{byte(i), 1, 2, 3})
		udpSend(t, peers[i].rtp, l.LocalAddr(), want)
		select {
		case pkt := <-stages[i].w.out:
			if pkt.SSRC != 0x5000+uint32(i) || !bytes.Equal(pkt.Payload, []byte{byte(i), 1, 2, 3}) {
				t.Fatalf("leg %d forwarded SSRC %#x payload %x", i, pkt.SSRC, pkt.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("leg %d forwarded nothing", i)
		}
	}
	if got := runtime.NumGoroutine(); got > base {
		t.Errorf("%d goroutines while %d paths forward, %d before", got, n, base)
	}
	for _, l := range legs {
		_ = l.Close()
	}
	for range n {
		select {
		case err := <-done:
			if !isNetClosed(err) {
				t.Fatalf("done got %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a closed leg never called its path's done")
		}
	}
	for i, s := range stages {
		if f := s.flushes.Load(); f != 1 {
			t.Errorf("path %d flushed %d times, want once", i, f)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("done called again: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestAttachRefusedOnClosedOrPausedLeg: attaching to a closed or paused
// leg calls done at once with why, and the handler never runs.
func TestAttachRefusedOnClosedOrPausedLeg(t *testing.T) {
	ports := testPorts(t, 2)
	paused := newTestLeg(t, ports, RTPLegOptions{})
	closed := newTestLeg(t, ports, RTPLegOptions{})
	if err := paused.PauseReads(); err != nil {
		t.Fatal(err)
	}
	_ = closed.Close()
	h := func([]byte) { t.Error("handler called") }
	if err := paused.Serve(h); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("paused leg: %v, want a deadline error", err)
	}
	if err := closed.Serve(h); !isNetClosed(err) {
		t.Errorf("closed leg: %v, want net.ErrClosed", err)
	}
	// Resumed, it serves again.
	if err := paused.ResumeReads(); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	res := serveInto(paused, got)
	_ = paused.Close()
	if err := <-res; !isNetClosed(err) {
		t.Errorf("resumed leg, closed: %v", err)
	}
}
