//go:build linux

package media

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// tcpPeer is a browser stand-in on an ICE-TCP connection to an end-to-end
// leg: the leg passes what arrives to its sink unchanged, so the test sees
// exactly the frames the relay reassembled.
type tcpPeer struct {
	t    testing.TB
	leg  *WebRTCLeg
	conn net.Conn

	mu  sync.Mutex
	got [][]byte // what reached the leg, in order
}

// newTCPPeer answers an offer with an end-to-end leg and connects to it
// over ICE-TCP with a nominating check; verify false leaves it unchecked.
func newTCPPeer(t testing.TB, w *WebRTC, verify bool) *tcpPeer {
	t.Helper()
	c := newRawICEClient(t, 1)
	leg, answer, err := w.AnswerE2E(c.sdp("offer", "actpass"), []sdp.Codec{{Name: "PCMU", PT: 0, Clock: 8000, Channels: 1}},
		E2EPeer{Fingerprint: "sha-256 " + strings.Repeat("AB:", 31) + "AB", Setup: sdp.SetupPassive})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	c.learnRelay(answer)
	for _, s := range c.socks {
		_ = s.conn.Close() // only the SDP is wanted: the test counts descriptors
	}
	conn, err := net.Dial("tcp", w.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	p := &tcpPeer{t: t, leg: leg, conn: conn}
	leg.sink.Store(&sinkRef{func(pkt []byte) {
		p.mu.Lock()
		p.got = append(p.got, bytes.Clone(pkt))
		p.mu.Unlock()
	}})
	if !verify {
		return p
	}
	check := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(c.relayUfrag+":"+c.ufrag),
		ice.UseCandidate(), stun.NewShortTermIntegrity(c.relayPwd), stun.Fingerprint)
	p.write(tcpFrame(check.Raw))
	resp := p.readFrame()
	if m := (&stun.Message{Raw: resp}); m.Decode() != nil || m.Type != stun.BindingSuccess {
		t.Fatalf("no binding success for the check: % x", resp)
	}
	pollUntil(t, "the leg's pair is the connection", func() bool { return leg.Transport() == "tcp4" })
	return p
}

func tcpFrame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

func (p *tcpPeer) write(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// readFrame reads one RFC 4571 frame from the relay.
func (p *tcpPeer) readFrame() []byte {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // failsafe only
	var hdr [2]byte
	if _, err := io.ReadFull(p.conn, hdr[:]); err != nil {
		p.t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(p.conn, b); err != nil {
		p.t.Fatal(err)
	}
	return b
}

// received returns a copy of what reached the leg so far.
func (p *tcpPeer) received() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.got...)
}

// pairOf returns the relay's connection carrying leg.
func pairOf(t testing.TB, leg *WebRTCLeg) *tcpPair {
	t.Helper()
	d := leg.dst.Load()
	if d == nil || d.tcp == nil {
		t.Fatal("the leg has no ICE-TCP pair")
	}
	return d.tcp
}

// countFDs is the number of descriptors the process has open.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestICETCPFraming: frames split across segments (written byte by byte),
// many in one segment, and cut at odd places all reach the leg whole and
// in order, the largest allowed frame included.
func TestICETCPFraming(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := newTCPPeer(t, w, true)

	var want [][]byte
	var stream []byte
	seq := uint16(100)
	for _, size := range []int{160, 1, 1200, 4096 - 12, 20, 160, 999, 3000, 160, 160} {
		payload := bytes.Repeat([]byte{byte(seq)}, size)
		pkt := mkRTP(t, 0, seq, uint32(seq)*160, 42, false, payload)
		seq++
		want = append(want, pkt)
		stream = append(stream, tcpFrame(pkt)...)
	}
	writers := map[string]func(){
		"byte by byte": func() {
			for i := range stream {
				p.write(stream[i : i+1])
			}
		},
		"all at once": func() { p.write(stream) },
		"odd chunks": func() {
			for i, n := 0, 0; i < len(stream); i += n {
				n = min(len(stream)-i, 1+(i*7)%1501)
				p.write(stream[i : i+n])
			}
		},
	}
	rounds := 0
	for _, name := range []string{"byte by byte", "all at once", "odd chunks"} {
		writers[name]()
		rounds++
		pollUntil(t, name+": frames reach the leg", func() bool { return len(p.received()) >= rounds*len(want) })
		got := p.received()
		if len(got) != rounds*len(want) {
			t.Fatalf("%s: %d packets reached the leg, want %d", name, len(got), rounds*len(want))
		}
		for i, pkt := range got[(rounds-1)*len(want):] {
			if !bytes.Equal(pkt, want[i]) {
				t.Fatalf("%s: packet %d differs: %d bytes, want %d", name, i, len(pkt), len(want[i]))
			}
		}
	}
}

// TestICETCPStalledPeer: a browser that stops reading fills its socket;
// sends to it neither block nor break its stream (whole frames, in order,
// some dropped), its backlog stays bounded and drains when the socket
// does (EPOLLOUT), and another call on the same loop goes on both ways
// meanwhile.
func TestICETCPStalledPeer(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	stalled := newTCPPeer(t, w, true)
	sp := pairOf(t, stalled.leg)
	// The other call shares the stalled one's loop.
	var other *tcpPeer
	for other == nil || pairOf(t, other.leg).lp != sp.lp {
		other = newTCPPeer(t, w, true)
	}

	// Flood the stalled browser until frames are being dropped.
	payload := make([]byte, 1200)
	seq := uint16(0)
	for sp.dropped.Load() == 0 {
		if seq == 60000 {
			t.Fatal("60000 frames to a peer that does not read, and none dropped")
		}
		seq++
		if err := stalled.leg.WriteOpaque(mkRTP(t, 0, seq, 0, 7, false, payload)); err != nil {
			t.Fatal(err)
		}
	}
	sp.wmu.Lock()
	backlog := sp.backlog()
	sp.wmu.Unlock()
	if backlog == 0 || backlog > tcpOutMax {
		t.Fatalf("backlog of %d bytes while dropping, bound %d", backlog, tcpOutMax)
	}
	if !sp.polling.Load() {
		t.Fatal("a connection with a backlog is not watched for writability")
	}

	// The other call is unaffected: its frames arrive, ours reach it.
	pkt := mkRTP(t, 0, 1, 160, 9, false, make([]byte, 160))
	other.write(tcpFrame(pkt))
	pollUntil(t, "the other call's packet reaches its leg", func() bool { return len(other.received()) == 1 })
	if err := other.leg.WriteOpaque(pkt); err != nil {
		t.Fatal(err)
	}
	if got := other.readFrame(); !bytes.Equal(got, pkt) {
		t.Fatalf("the other call got % x, want % x", got, pkt)
	}

	// The stalled browser reads again: its stream is whole frames in
	// order up to the last one sent after its backlog drained.
	const last = 65000
	_ = stalled.conn.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		var hdr [2]byte
		prev := uint16(0)
		for {
			if _, err := io.ReadFull(stalled.conn, hdr[:]); err != nil {
				done <- err
				return
			}
			b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
			if _, err := io.ReadFull(stalled.conn, b); err != nil {
				done <- err
				return
			}
			s := binary.BigEndian.Uint16(b[2:])
			if len(b) != 12+len(payload) || s <= prev {
				t.Errorf("frame of %d bytes, seq %d after %d", len(b), s, prev)
			}
			prev = s
			if s == last {
				done <- nil
				return
			}
		}
	}()
	pollUntil(t, "the backlog drains once the browser reads", func() bool {
		sp.wmu.Lock()
		defer sp.wmu.Unlock()
		return sp.backlog() == 0
	})
	if err := stalled.leg.WriteOpaque(mkRTP(t, 0, last, 0, 7, false, payload)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading the stalled browser's stream: %v", err)
		}
	case <-time.After(30 * time.Second): // failsafe only
		t.Fatal("the last frame never reached the browser that read again")
	}
}

// TestICETCPClosedMidFrame: connections closed part-way through a frame,
// checked or not, are torn down: none is left in the listener's set, no
// descriptor stays open, and a leg whose pair it was fails.
func TestICETCPClosedMidFrame(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := countFDs(t)
	var legs []*WebRTCLeg
	for i := range 10 {
		p := newTCPPeer(t, w, i%2 == 0)
		if i%2 == 0 {
			legs = append(legs, p.leg)
		}
		// A header announcing 1000 bytes, then only some of them.
		p.write(append([]byte{0x03, 0xe8, 0x80}, make([]byte, 100)...))
		_ = p.conn.Close()
	}
	pollUntil(t, "every connection forgotten", func() bool {
		w.tcp.mu.Lock()
		defer w.tcp.mu.Unlock()
		return len(w.tcp.conns) == 0
	})
	pollUntil(t, "descriptors given back", func() bool { return countFDs(t) <= before })
	for _, l := range legs {
		select {
		case <-l.Failed():
			if l.FailCause() != FailICETCPLost {
				t.Fatalf("leg failed with %s, want %s", l.FailCause(), FailICETCPLost)
			}
		case <-time.After(10 * time.Second): // failsafe only
			t.Fatal("a leg whose connection closed did not fail")
		}
	}
}

// BenchmarkICETCPLoop is one packet each way over ICE-TCP through a media
// loop: the browser's frame is read and reassembled on the loop and handed
// to an end-to-end leg, whose sink sends it straight back on the
// connection. -benchmem shows the relay's path allocates nothing.
func BenchmarkICETCPLoop(b *testing.B) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	p := newTCPPeer(b, w, true)
	p.leg.sink.Store(&sinkRef{func(pkt []byte) { _ = p.leg.WriteOpaque(pkt) }})
	frame := tcpFrame(mkRTP(b, 0, 1, 160, 42, false, make([]byte, 160)))
	back := make([]byte, len(frame))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := p.conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(p.conn, back); err != nil {
			b.Fatal(err)
		}
	}
}
