package media

import (
	"bytes"
	"encoding/binary"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// chanReader is an in-memory leg: each packet sent on ch is one ReadRTP;
// closing ch ends the stream with io.EOF.
type chanReader struct{ ch chan []byte }

func (r *chanReader) ReadRTP(b []byte) (int, error) {
	p, ok := <-r.ch
	if !ok {
		return 0, io.EOF
	}
	return copy(b, p), nil
}

// chanWriter hands a copy of every packet written to out.
type chanWriter struct{ out chan rtp.Packet }

func (w *chanWriter) WriteRTP(b []byte) error {
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		return err
	}
	p.Payload = append([]byte(nil), p.Payload...)
	w.out <- p
	return nil
}

// TestPathSwitch switches a running path from plain forwarding to a
// forwarder that renumbers the payload type and recodes the payload: the
// receiver must see one stream throughout (same SSRC, no sequence gap,
// timestamps one frame apart) with the new payload type and bytes after
// the switch, and the source stream never had to change.
func TestPathSwitch(t *testing.T) {
	in := &chanReader{ch: make(chan []byte)}
	w := &chanWriter{out: make(chan rtp.Packet, 1)}
	first := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 0}, ClockRate: 8000})
	p := NewPath(first.Stage(w))
	done := make(chan error, 1)
	go func() { done <- p.Run(in) }()

	var inv [256]byte
	for i := range inv {
		inv[i] = ^byte(i)
	}
	payload := []byte{0x00, 0x01, 0x7f, 0xff}
	var got []rtp.Packet
	for i := range 10 {
		if i == 5 {
			p.Switch(NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 8}, ClockRate: 8000, Recode: &inv, RecodePT: 0}).Stage(w))
		}
		in.ch <- mkRTP(t, 0, 4000+uint16(i), 90000+160*uint32(i), 0x1111, i == 0, payload)
		got = append(got, <-w.out)
	}
	close(in.ch)
	if err := <-done; err != io.EOF {
		t.Fatalf("Run returned %v, want the reader's io.EOF", err)
	}
	for i, pkt := range got {
		if pkt.SSRC != got[0].SSRC {
			t.Fatalf("packet %d: SSRC %#x, the stream started with %#x", i, pkt.SSRC, got[0].SSRC)
		}
		if i > 0 && pkt.SequenceNumber != got[i-1].SequenceNumber+1 {
			t.Fatalf("packet %d: sequence %d after %d", i, pkt.SequenceNumber, got[i-1].SequenceNumber)
		}
		if i > 0 && pkt.Timestamp-got[i-1].Timestamp != 160 {
			t.Fatalf("packet %d: timestamp step %d, want 160", i, pkt.Timestamp-got[i-1].Timestamp)
		}
		wantPT, want := uint8(0), payload
		if i >= 5 {
			wantPT, want = 8, []byte{0xff, 0xfe, 0x80, 0x00}
		}
		if pkt.PayloadType != wantPT || !bytes.Equal(pkt.Payload, want) {
			t.Fatalf("packet %d: PT %d payload %x, want PT %d payload %x", i, pkt.PayloadType, pkt.Payload, wantPT, want)
		}
	}
}

// TestForwarderResumeAfterPause: a stage that takes over a stream that
// paused for a second moves the timestamps on by that second, not by one
// frame, so the receiver plays the new audio at the right time.
func TestForwarderResumeAfterPause(t *testing.T) {
	now := time.Now().UnixNano()
	pos := StreamPos{SSRC: 7, Seq: 100, NextTS: 16000, Clock: 8000, At: now - int64(time.Second)}
	if got := pos.TSAfter(8000, now); got != 16000+8000-160 {
		t.Fatalf("after a 1 s pause the stream resumes at %d, want about %d", got, 16000+8000-160)
	}
	if got := (StreamPos{NextTS: 500, At: now}).TSAfter(8000, now); got != 500 {
		t.Fatalf("without a pause the stream resumes at %d, want NextTS 500", got)
	}
	f := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{8: 8}, ClockRate: 8000})
	f.Resume(pos)
	pkt := mkRTP(t, 8, 1, 1, 0x2222, false, make([]byte, 160))
	if !f.Rewrite(pkt) {
		t.Fatal("dropped")
	}
	if s, q, ts := SSRC(pkt), Seq(pkt), Timestamp(pkt); s != 7 || q != 101 || ts < 16000+8000-160 || ts > 16000+8000*60 {
		t.Fatalf("first packet after resume: SSRC %d seq %d ts %d; want 7, 101, about %d", s, q, ts, 16000+8000-160)
	}
	if f.Position().Seq != 101 || f.Position().SSRC != 7 {
		t.Fatalf("position %+v", f.Position())
	}
}

// TestForwarderRecode converts only the payload type it is told to, and
// leaves padding alone.
func TestForwarderRecode(t *testing.T) {
	var tab [256]byte
	for i := range tab {
		tab[i] = byte(i) + 1
	}
	f := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 8, 101: 101}, Recode: &tab, RecodePT: 0})
	audio := mkRTP(t, 0, 1, 160, 3, false, []byte{1, 2, 3})
	event := mkRTP(t, 101, 2, 320, 3, false, []byte{1, 2, 3, 4})
	padded := append(mkRTP(t, 0, 3, 480, 3, false, []byte{9, 9}), 0, 2)
	padded[0] |= 0x20
	for _, p := range [][]byte{audio, event, padded} {
		if !f.Rewrite(p) {
			t.Fatal("dropped")
		}
	}
	if !bytes.Equal(audio[12:], []byte{2, 3, 4}) || !bytes.Equal(event[12:], []byte{1, 2, 3, 4}) || !bytes.Equal(padded[12:], []byte{10, 10, 0, 2}) {
		t.Fatalf("audio %x, event %x, padded %x", audio[12:], event[12:], padded[12:])
	}
}

// TestPathZeroAllocs: a packet through a running path (stage lookup,
// rewrite, recode, write) allocates nothing.
func TestPathZeroAllocs(t *testing.T) {
	var tab [256]byte
	const packets = 10000
	r := &loopReader{pkt: mkRTP(t, 0, 0, 0, 42, false, make([]byte, 160)), limit: packets}
	p := NewPath(NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 8}, ClockRate: 8000, Recode: &tab}).Stage(discard{}))
	// AllocsPerRun counts the whole process: timers and goroutines other
	// tests left winding down allocate a few times meanwhile. One
	// allocation per packet would be 10000; allow 1 %.
	if a := testing.AllocsPerRun(5, func() {
		r.i = 0
		_ = p.Run(r)
	}); a >= packets/100 {
		t.Fatalf("%v allocations per %d packets", a, packets)
	}
}

// loopReader returns the same packet with advancing numbering, limit
// times, then io.EOF; it allocates nothing.
type loopReader struct {
	pkt      []byte
	i, limit int
}

func (r *loopReader) ReadRTP(b []byte) (int, error) {
	if r.i >= r.limit {
		return 0, io.EOF
	}
	r.i++
	binary.BigEndian.PutUint16(r.pkt[2:], uint16(r.i))
	binary.BigEndian.PutUint32(r.pkt[4:], uint32(r.i)*160)
	return copy(b, r.pkt), nil
}

type discard struct{}

func (discard) WriteRTP([]byte) error { return nil }

// BenchmarkPathForward is one packet per op through a Path running a
// Forwarder stage, without and with G.711 recoding: the per-packet cost a
// switchable direction adds on top of BenchmarkForwarderRewrite.
func BenchmarkPathForward(b *testing.B) {
	var tab [256]byte
	for _, recode := range []bool{false, true} {
		name := "plain"
		o := ForwarderOptions{PTMap: map[uint8]uint8{0: 8}, ClockRate: 8000}
		if recode {
			name, o.Recode = "recode", &tab
		}
		b.Run(name, func(b *testing.B) {
			r := &loopReader{pkt: mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160)), limit: b.N}
			p := NewPath(NewForwarder(o).Stage(discard{}))
			b.SetBytes(int64(len(r.pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			_ = p.Run(r)
		})
	}
}

// BenchmarkPathForwardCalls is BenchmarkPathForward/plain with the packets
// of many calls interleaved, one path each, as a media loop sees them:
// with a thousand calls each packet finds its path's and forwarder's state
// out of the nearer caches, which is what the relay's cost per call grows
// with. Each call's objects sit among other allocations of the same size
// as a call's, so they are spread as they are in the relay.
func BenchmarkPathForwardCalls(b *testing.B) {
	for _, calls := range []int{1, 1000, 10000} {
		b.Run(strconv.Itoa(calls), func(b *testing.B) {
			paths := make([]*Path, calls)
			other := make([][]byte, calls) // a call's other state
			for i := range paths {
				paths[i] = NewPath(NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 8}, ClockRate: 8000}).Stage(discard{}))
				other[i] = make([]byte, 4096)
			}
			pkt := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				binary.BigEndian.PutUint16(pkt[2:], uint16(i/calls))
				binary.BigEndian.PutUint32(pkt[4:], uint32(i/calls)*160)
				binary.BigEndian.PutUint32(pkt[8:], 42) // the forwarder wrote its own
				pkt[1] = 0
				paths[i%calls].process(pkt)
			}
			runtime.KeepAlive(other)
		})
	}
}
