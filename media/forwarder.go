package media

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// forwardBufSize holds any RTP packet that fits an Ethernet MTU, with room
// to spare; the leg reports larger datagrams as truncated.
const forwardBufSize = 2048

// ForwarderOptions configures NewForwarder.
type ForwarderOptions struct {
	// PTMap maps source payload types to destination payload types (audio
	// and telephone-event may be numbered differently on the two legs).
	// Packets with a PT not in the map are dropped and counted as
	// DropUnknownPT.
	PTMap map[uint8]uint8
	// SSRC is the fixed outgoing SSRC of this direction; 0 picks a random one.
	SSRC uint32
	// ClockRate, if known, lets a source change after a pause advance the
	// timestamp by the real elapsed time rather than by one frame.
	ClockRate uint32
	// OnPacket, if set, is called with the size of every forwarded packet
	// (metrics). It runs on the packet path: keep it cheap.
	OnPacket func(n int)
	// OnDrop, if set, is called for every dropped packet with a Drop* reason.
	OnDrop func(reason string)
	// Recode, if set, converts the payload of packets whose source payload
	// type is RecodePT byte by byte: Recode[b] replaces b. A G.711 μ-law
	// leg joined to an A-law leg needs only that, no decoder.
	Recode   *[256]byte
	RecodePT uint8
}

// Forwarder passes RTP from one leg to the other without decoding. It maps
// the payload type, replaces the SSRC by one fixed for the direction, and
// rewrites sequence number and timestamp so that the output stays continuous
// when the source changes SSRC or restarts its counters: the receiver never
// sees a gap or a jump the relay created. The marker bit is kept.
//
// A Forwarder serves one direction; Run and Rewrite must not be called
// concurrently. LastPacket is safe from any goroutine.
type Forwarder struct {
	o      ForwarderOptions
	pt     [128]int16 // destination PT, or -1 to drop; avoids a map lookup per packet
	ssrc   uint32
	buf    []byte    // Run's, made there
	recode [256]byte // o.Recode, copied so the caller's table can change

	have      bool
	resync    bool // the next packet starts a new source, whatever its SSRC (Resume)
	srcSSRC   uint32
	highInSeq uint16 // highest input sequence number of the current source
	seqOff    uint16 // added to the input sequence number
	tsOff     uint32 // added to the input timestamp
	outSeq    uint16 // highest output sequence number
	outTS     uint32 // timestamp of that packet
	tsStep    uint32 // last timestamp increment between consecutive packets
	lastNanos int64

	last atomic.Int64 // unix nanos of the last accepted packet
}

// NewForwarder builds a Forwarder and its PT table.
func NewForwarder(o ForwarderOptions) *Forwarder {
	f := &Forwarder{o: o, ssrc: o.SSRC}
	if o.Recode != nil {
		f.recode = *o.Recode
	}
	for i := range f.pt {
		f.pt[i] = -1
	}
	for src, dst := range o.PTMap {
		if src < 128 && dst < 128 {
			f.pt[src] = int16(dst)
		}
	}
	for f.ssrc == 0 {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		f.ssrc = binary.BigEndian.Uint32(b[:])
	}
	return f
}

// SSRC is the outgoing SSRC of this direction.
func (f *Forwarder) SSRC() uint32 { return f.ssrc }

func (f *Forwarder) drop(reason string) {
	if f.o.OnDrop != nil {
		f.o.OnDrop(reason)
	}
}

// Run forwards packets from one leg to the other until from returns an
// error, which it returns. A write error is counted (DropWriteFailed) and
// forwarding goes on, unless the writer is closed.
func (f *Forwarder) Run(from RTPReader, to RTPWriter) error {
	if f.buf == nil {
		f.buf = make([]byte, forwardBufSize) // only Run reads into one: a Path lends its packets
	}
	for {
		n, err := from.ReadRTP(f.buf)
		if err != nil {
			return err
		}
		if err := f.forward(f.buf[:n], to); errors.Is(err, net.ErrClosed) {
			return err
		}
	}
}

// forward rewrites pkt and writes it to to. A write error is returned, and
// counted unless the writer is closed (the call is ending).
func (f *Forwarder) forward(pkt []byte, to RTPWriter) error {
	if !f.Rewrite(pkt) {
		return nil
	}
	if err := to.WriteRTP(pkt); err != nil {
		if !errors.Is(err, net.ErrClosed) {
			f.drop(DropWriteFailed)
		}
		return err
	}
	if f.o.OnPacket != nil {
		f.o.OnPacket(len(pkt))
	}
	return nil
}

// Rewrite applies the forwarding step to one packet in place and reports
// whether to send it. It allocates nothing.
func (f *Forwarder) Rewrite(pkt []byte) bool {
	hl, ok := RTPHeaderLen(pkt)
	if !ok {
		f.drop(DropMalformed)
		return false
	}
	srcPT := pkt[1] & 0x7f
	dstPT := f.pt[srcPT]
	if dstPT < 0 {
		f.drop(DropUnknownPT)
		return false
	}
	now := packetTime(pkt).UnixNano()
	ssrc := binary.BigEndian.Uint32(pkt[8:])
	seq := binary.BigEndian.Uint16(pkt[2:])
	ts := binary.BigEndian.Uint32(pkt[4:])

	rebased := false
	switch {
	case !f.have:
		// The first source passes its numbering through unchanged.
		f.have, f.srcSSRC, f.highInSeq = true, ssrc, seq
		f.outSeq, f.outTS = seq-1, ts
	case ssrc != f.srcSSRC || f.resync:
		f.srcSSRC, f.resync = ssrc, false
		f.rebase(seq, ts, now)
		rebased = true
	default:
		// Same source: a jump far ahead or back is a restart of its
		// counters (RFC 3550 A.1 limits), not loss or reordering.
		if d := int16(seq - f.highInSeq); d > maxDropout || d < -maxMisorder {
			f.rebase(seq, ts, now)
			rebased = true
		}
	}

	outSeq, outTS := seq+f.seqOff, ts+f.tsOff
	if d := int16(outSeq - f.outSeq); d > 0 {
		if d == 1 && !rebased && outTS != f.outTS && outTS-f.outTS < 1<<20 {
			f.tsStep = outTS - f.outTS
		}
		f.outSeq, f.outTS, f.highInSeq = outSeq, outTS, seq
	}
	f.lastNanos = now
	f.last.Store(now)

	pkt[1] = pkt[1]&0x80 | uint8(dstPT)
	binary.BigEndian.PutUint16(pkt[2:], outSeq)
	binary.BigEndian.PutUint32(pkt[4:], outTS)
	binary.BigEndian.PutUint32(pkt[8:], f.ssrc)
	if f.o.Recode != nil && srcPT == f.o.RecodePT {
		tab := &f.recode
		payload := pkt[hl : hl+rtpPayloadLen(pkt, hl)]
		for i, b := range payload {
			payload[i] = tab[b]
		}
	}
	return true
}

// frameStep is the timestamp step of one 20 ms frame, the guess when the
// source gave nothing to go on.
func (f *Forwarder) frameStep() uint32 {
	if f.o.ClockRate != 0 {
		return f.o.ClockRate / 50
	}
	return 160 // 20 ms of G.711
}

// rebase makes the packet (seq, ts) follow the last output packet directly:
// next sequence number, and one frame later in time (or the real elapsed
// time after a pause, if the clock rate is known).
func (f *Forwarder) rebase(seq uint16, ts uint32, now int64) {
	step := f.tsStep
	if step == 0 {
		step = f.frameStep()
	}
	if f.o.ClockRate != 0 && f.lastNanos != 0 {
		elapsedUs := uint64(max(now-f.lastNanos, 0)) / 1000
		if el := elapsedUs * uint64(f.o.ClockRate) / 1e6; el > 2*uint64(step) && el < 1<<31 {
			step = uint32(el)
		}
	}
	f.seqOff = f.outSeq + 1 - seq
	f.tsOff = f.outTS + step - ts
	f.highInSeq = seq
}

// LastPacket is when the last packet was accepted for forwarding, zero if
// none yet; the call uses it for the media timeout.
func (f *Forwarder) LastPacket() time.Time {
	if n := f.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Position is where the forwarded stream has got to. Like Rewrite, it
// must not run concurrently with Run or Rewrite.
func (f *Forwarder) Position() StreamPos {
	if !f.have {
		return StreamPos{}
	}
	step := f.tsStep
	if step == 0 {
		step = f.frameStep()
	}
	return StreamPos{SSRC: f.ssrc, Seq: f.outSeq, NextTS: f.outTS + step, Clock: f.o.ClockRate, At: f.lastNanos}
}

// Resume makes a Forwarder that has forwarded nothing carry on the stream
// another stage left at p: its SSRC, and the first packet rebased to follow
// p's last one.
func (f *Forwarder) Resume(p StreamPos) {
	if !p.Valid() || f.have {
		return
	}
	f.ssrc = p.SSRC
	f.have, f.resync = true, true
	f.outSeq = p.Seq
	f.lastNanos = p.At
	f.tsStep = 0
	// rebase adds one frame, or the elapsed time, to outTS.
	f.outTS = p.NextTS - f.frameStep()
}

// Stage returns the Forwarder as a Path stage writing to to. Write errors
// are counted as in Run, but a Path stops only when its reader does.
func (f *Forwarder) Stage(to RTPWriter) Stage { return &forwardStage{f: f, to: to} }

type forwardStage struct {
	f  *Forwarder
	to RTPWriter
}

func (s *forwardStage) Process(pkt []byte)  { _ = s.f.forward(pkt, s.to) }
func (s *forwardStage) Flush()              {}
func (s *forwardStage) Position() StreamPos { return s.f.Position() }
func (s *forwardStage) Resume(p StreamPos)  { s.f.Resume(p) }
