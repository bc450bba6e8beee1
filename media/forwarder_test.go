package media

import (
	"bytes"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/pion/rtp"
)

// TestForwarderBetweenLegs sends RTP from a raw peer into one leg, forwards
// it to a second leg and checks what a second raw peer receives.
func TestForwarderBetweenLegs(t *testing.T) {
	base := runtime.NumGoroutine()
	ports := testPorts(t, 2)
	legA := newTestLeg(t, ports, RTPLegOptions{})
	legB := newTestLeg(t, ports, RTPLegOptions{})
	caller, callee := newUDPPeer(t), newUDPPeer(t)
	legA.SetRemote(udpAddr(caller.rtp), udpAddr(caller.rtcp))
	legB.SetRemote(udpAddr(callee.rtp), udpAddr(callee.rtcp))

	var drops dropLog
	var forwarded atomic.Int64
	const outSSRC = 0xfeedbeef
	fwd := NewForwarder(ForwarderOptions{
		PTMap:    map[uint8]uint8{0: 8, 101: 96},
		SSRC:     outSSRC,
		OnDrop:   drops.add,
		OnPacket: func(int) { forwarded.Add(1) },
	})
	runErr := make(chan error, 1)
	go func() { runErr <- fwd.Run(legA, legB) }()

	type in struct {
		pt     uint8
		seq    uint16
		ts     uint32
		ssrc   uint32
		marker bool
	}
	var sent []in
	// Source 1: audio with a talkspurt marker, a DTMF event, a PT not in
	// the map (dropped), then the source changes SSRC and restarts its
	// counters, then restarts its counters again under the same SSRC.
	for i := 0; i < 5; i++ {
		sent = append(sent, in{0, 1000 + uint16(i), 50000 + 160*uint32(i), 0xaaaa, i == 0})
	}
	sent = append(sent, in{101, 1005, 50800, 0xaaaa, true})
	sent = append(sent, in{18, 1006, 50960, 0xaaaa, false})
	for i := 0; i < 3; i++ {
		sent = append(sent, in{0, 7 + uint16(i), 99 + 160*uint32(i), 0xbbbb, false})
	}
	for i := 0; i < 3; i++ {
		sent = append(sent, in{0, 40000 + uint16(i), 1e9 + 160*uint32(i), 0xbbbb, false})
	}
	for i, s := range sent {
		udpSend(t, caller.rtp, legA.LocalAddr(), mkRTP(t, s.pt, s.seq, s.ts, s.ssrc, s.marker, []byte(fmt.Sprintf("payload %d", i))))
	}

	var got []rtp.Packet
	for len(got) < len(sent)-1 {
		b, from := udpRecv(t, callee.rtp)
		if from != legB.LocalAddr() {
			t.Fatalf("callee got media from %s, want %s", from, legB.LocalAddr())
		}
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}

	wantPT := map[uint8]uint8{0: 8, 101: 96}
	j := 0
	for i, s := range sent {
		if s.pt == 18 {
			continue
		}
		p := got[j]
		if want := fmt.Sprintf("payload %d", i); !bytes.Equal(p.Payload, []byte(want)) {
			t.Errorf("packet %d payload %q, want %q", j, p.Payload, want)
		}
		if p.PayloadType != wantPT[s.pt] || p.SSRC != outSSRC || p.Marker != s.marker {
			t.Errorf("packet %d: PT %d SSRC %x marker %v, want %d %x %v", j, p.PayloadType, p.SSRC, p.Marker, wantPT[s.pt], uint32(outSSRC), s.marker)
		}
		// Sequence numbers run on without a gap; the first source
		// passes through unchanged.
		if want := uint16(1000 + j); p.SequenceNumber != want {
			t.Errorf("packet %d seq %d, want %d", j, p.SequenceNumber, want)
		}
		// Timestamps advance one 20 ms frame per packet, across both
		// source changes (the DTMF packet sits on its own frame here).
		if want := 50000 + 160*uint32(j); p.Timestamp != want {
			t.Errorf("packet %d ts %d, want %d", j, p.Timestamp, want)
		}
		j++
	}
	if drops.count(DropUnknownPT) != 1 {
		t.Errorf("drops %v, want one unknown_pt", drops.all())
	}
	// OnPacket runs after the write: the callee may have the last packet first.
	pollUntil(t, "every packet counted", func() bool { return forwarded.Load() == int64(len(sent)-1) })
	if forwarded.Load() != int64(len(sent)-1) || fwd.LastPacket().IsZero() {
		t.Errorf("OnPacket count %d, LastPacket %v", forwarded.Load(), fwd.LastPacket())
	}

	legA.Close()
	if err := <-runErr; !isNetClosed(err) {
		t.Errorf("Run returned %v, want net.ErrClosed", err)
	}
	legB.Close()
	waitGoroutinesBelow(t, base)
}

// TestForwarderReorder keeps reordered packets in order relative to each
// other: reordering is not a restart.
func TestForwarderReorder(t *testing.T) {
	f := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 0}, SSRC: 5})
	for _, s := range []uint16{10, 12, 11, 13} {
		p := mkRTP(t, 0, s, uint32(s)*160, 1, false, nil)
		if !f.Rewrite(p) {
			t.Fatal("dropped")
		}
		if Seq(p) != s || Timestamp(p) != uint32(s)*160 || SSRC(p) != 5 {
			t.Errorf("seq %d → %d ts %d ssrc %d", s, Seq(p), Timestamp(p), SSRC(p))
		}
	}
}

// TestForwarderSSRCChangeElapsed: with a clock rate, a source change after
// a pause advances the timestamp by the real time, in whole ticks.
func TestForwarderSSRCChangeElapsed(t *testing.T) {
	f := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 0}, ClockRate: 8000})
	if f.SSRC() == 0 {
		t.Fatal("no random SSRC")
	}
	p := mkRTP(t, 0, 1, 160, 1, false, nil)
	f.Rewrite(p)
	f.lastNanos -= 1e9 // pretend the last packet was a second ago
	q := mkRTP(t, 0, 500, 7, 2, false, nil)
	f.Rewrite(q)
	if Seq(q) != 2 {
		t.Errorf("seq %d, want 2", Seq(q))
	}
	if d := Timestamp(q) - 160; d < 8000 || d > 8000+800 {
		t.Errorf("ts advanced %d after 1 s, want about 8000", d)
	}
}

func TestForwarderMalformed(t *testing.T) {
	var drops dropLog
	f := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 0, 200: 1}, OnDrop: drops.add})
	for _, b := range [][]byte{nil, {0x80}, make([]byte, 12)} {
		if f.Rewrite(b) {
			t.Errorf("accepted %x", b)
		}
	}
	if drops.count(DropMalformed) != 3 {
		t.Errorf("drops %v", drops.all())
	}
}
