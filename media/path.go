package media

import (
	"sync/atomic"
	"time"
)

// Stage is what one direction of a call does with each packet read from
// its source leg: a Forwarder's rewrite, or a transcoder's decode and
// re-encode. It writes what it produces to the destination it was built
// with. A Path drives a Stage from one goroutine at a time, so a Stage
// needs no locks.
type Stage interface {
	// Process handles one packet read from the source leg. pkt may be
	// modified in place and is not valid after the call.
	Process(pkt []byte)
	// Flush sends whatever the stage still holds (a reorder buffer): the
	// stage is being replaced, or the source leg has closed.
	Flush()
	// Position is where the stage's outgoing stream has got to.
	Position() StreamPos
	// Resume makes a stage that has not processed anything yet carry on
	// the stream another stage left at p, so the receiver sees one stream:
	// same SSRC, the next sequence number, timestamps moving on with the
	// time elapsed.
	Resume(p StreamPos)
}

// StreamPos is where an outgoing RTP stream has got to.
type StreamPos struct {
	SSRC   uint32
	Seq    uint16 // sequence number of the last packet sent
	NextTS uint32 // timestamp of a packet that would follow at once
	Clock  uint32 // RTP clock of NextTS; 0 if unknown
	// At is when the last packet was sent (unix ns); 0 means nothing was
	// sent and there is no stream to carry on.
	At int64
}

// Valid reports whether p describes a stream that was sent.
func (p StreamPos) Valid() bool { return p.At != 0 }

// TSAfter is the timestamp, at clock, of the first packet of a stream
// carrying on from p at unix time now: NextTS, or later by the elapsed time
// when the stream paused for more than a couple of frames (a hold, DTX).
// Timestamps keep counting from NextTS even when the clock changes with
// the codec; a receiver re-reads the clock from the payload type.
func (p StreamPos) TSAfter(clock uint32, now int64) uint32 {
	if clock == 0 || p.At == 0 {
		return p.NextTS
	}
	frame := uint64(clock / 50) // 20 ms: NextTS already counts one
	elapsed := uint64(max(now-p.At, 0)) * uint64(clock) / uint64(time.Second)
	if elapsed > 2*frame && elapsed < 1<<31 {
		return p.NextTS + uint32(elapsed-frame)
	}
	return p.NextTS
}

// Path runs one direction of a call: it takes packets from a leg and hands
// each to the current Stage. The Stage can be replaced while the path runs
// (the trunk changed codec mid-call) without stopping the path or touching
// either leg. The new stage takes over between two packets, on the
// goroutine that delivers them: the old one is flushed and the new one
// resumes its outgoing stream. The packet path pays one atomic load for
// this, of the word beside the current stage: packets of hundreds of
// calls interleave on a media loop, so each dependent load per packet is
// likely a cache miss.
type Path struct {
	next atomic.Pointer[stageRef] // a stage waiting to take over; nil if none
	cur  Stage                    // the running goroutine's
	buf  []byte
}

type stageRef struct{ s Stage }

// NewPath returns a Path that starts with stage s.
func NewPath(s Stage) *Path { return &Path{cur: s} }

// Switch replaces the stage. It takes effect before the next packet read;
// s must be fresh (it is resumed from the current stage's position). Safe
// from any goroutine.
func (p *Path) Switch(s Stage) { p.next.Store(&stageRef{s}) }

// Start runs the path from from until from fails, then flushes the
// current stage and calls done with the error. A PacketSource is attached:
// its packets are processed on the goroutine that received them, and the
// path has no goroutine of its own while the call lasts. Any other reader
// gets a goroutine running Run.
func (p *Path) Start(from RTPReader, done func(error)) {
	src, ok := from.(PacketSource)
	if !ok {
		go func() { done(p.Run(from)) }()
		return
	}
	p.begin()
	src.Attach(p.process, func(err error) {
		p.finish()
		done(err)
	})
}

// Run reads from until it returns an error, which Run returns after
// flushing the current stage. One goroutine runs a Path. A PacketSource
// is attached instead of read, and Run waits for it to be done.
func (p *Path) Run(from RTPReader) error {
	if _, ok := from.(PacketSource); ok {
		ch := make(chan error, 1)
		p.Start(from, func(err error) { ch <- err })
		return <-ch
	}
	p.begin()
	if p.buf == nil {
		p.buf = make([]byte, forwardBufSize) // only a reader needs one: sources lend theirs
	}
	for {
		n, err := from.ReadRTP(p.buf)
		if err != nil {
			p.finish()
			return err
		}
		// A misbehaving reader must not be able to make us slice out of range.
		p.process(p.buf[:max(0, min(n, len(p.buf)))])
	}
}

// begin takes a stage given to Switch before anything ran: there is no
// stream to carry on.
func (p *Path) begin() {
	if next := p.next.Swap(nil); next != nil {
		p.cur = next.s
	}
}

// finish flushes the stage the path ends with, after a pending switch.
func (p *Path) finish() {
	p.takeSwitch()
	p.cur.Flush()
}

// process hands pkt to the current stage, after a pending switch.
func (p *Path) process(pkt []byte) {
	if p.next.Load() != nil {
		p.takeSwitch()
	}
	p.cur.Process(pkt)
}

// takeSwitch lets a stage given to Switch take over from the current one.
func (p *Path) takeSwitch() {
	if next := p.next.Swap(nil); next != nil {
		p.cur.Flush()
		next.s.Resume(p.cur.Position())
		p.cur = next.s
	}
}
