package transcode

// Reordering and loss detection for one incoming RTP stream.
//
// A relay has no timer on the packet path, so the buffer decides only when
// packets arrive: a missing packet is given up once a packet reorderWindow
// sequence numbers past it has arrived. That bounds the extra delay to
// reorderWindow packets, and only while a hole is open.

const (
	// reorderWindow is how far past a hole we wait before declaring it lost;
	// packets up to reorderWindow-1 places late are put back in order.
	reorderWindow = 3
	// ringSize is the number of slots; a power of two ≥ reorderWindow+1.
	ringSize = 8
	// maxConceal is the longest run of lost packets we conceal; a longer
	// hole is a discontinuity, skipped with the timestamps jumping ahead.
	maxConceal = 5
	// resyncDistance: a packet this far behind is not late but a restarted
	// sequence (RFC 3550 §A.1 uses a similar "misorder" bound).
	resyncDistance = 100
	// maxPayload is the largest RTP payload kept: an Ethernet MTU.
	maxPayload = 1500
)

// slot holds one buffered packet; the payload is copied because the read
// buffer is reused for the next packet.
type slot struct {
	used   bool
	marker bool
	pt     uint8
	seq    uint16
	ts     uint32
	n      int
	data   [maxPayload]byte
}

func (s *slot) payload() []byte { return s.data[:s.n] }

// seqHandler receives the stream in sequence order.
type seqHandler interface {
	// play handles a packet that arrived, in order.
	play(s *slot)
	// lost conceals one missing packet; next is the packet right after
	// it if that one is buffered (for Opus in-band FEC), else nil.
	lost(next *slot)
	// discontinuity is called when a hole is too long to conceal or the
	// sequence restarts; the packets in the hole are skipped.
	discontinuity()
	// late counts a packet that came after its turn, or a duplicate.
	late()
}

type reorder struct {
	ring    [ringSize]slot
	count   int
	started bool
	next    uint16 // sequence number to hand out next
	h       seqHandler
}

// reset forgets the sequence (a new SSRC); buffered packets are discarded,
// so call flush first to play them.
func (r *reorder) reset() {
	for i := range r.ring {
		r.ring[i].used = false
	}
	r.count = 0
	r.started = false
}

// push adds a packet and hands out whatever is now in order.
func (r *reorder) push(p *rtpPacket) {
	if len(p.Payload) > maxPayload {
		return // caller checks; kept so push alone never overruns a slot
	}
	if !r.started {
		r.started = true
		r.next = p.Seq
	}
	d := int16(p.Seq - r.next)
	switch {
	case d < 0 && d > -resyncDistance:
		r.h.late()
		return
	case d < 0 || d >= ringSize:
		// The sender jumped (restart, long outage): play out what we hold,
		// then continue from this packet unless the hole is short enough
		// to conceal.
		r.flush()
		if gap := int16(p.Seq - r.next); gap < 0 || gap > maxConceal {
			r.h.discontinuity()
			r.next = p.Seq
		}
	}
	s := &r.ring[p.Seq%ringSize]
	if s.used {
		// Same slot and still held: a duplicate (a different sequence
		// number cannot share the slot inside the window).
		r.h.late()
		return
	}
	s.used, s.marker, s.pt, s.seq, s.ts = true, p.Marker, p.PT, p.Seq, p.TS
	s.n = copy(s.data[:], p.Payload)
	r.count++
	r.release(false)
}

// flush hands out everything held, concealing the holes between.
func (r *reorder) flush() { r.release(true) }

func (r *reorder) release(force bool) {
	for r.count > 0 {
		s := &r.ring[r.next%ringSize]
		if s.used && s.seq == r.next {
			s.used = false
			r.count--
			r.next++
			r.h.play(s)
			continue
		}
		// r.next is missing. Find the nearest and farthest held packets.
		lowest, highest := uint16(ringSize), uint16(0)
		for i := range r.ring {
			if !r.ring[i].used {
				continue
			}
			d := r.ring[i].seq - r.next
			lowest = min(lowest, d)
			highest = max(highest, d)
		}
		if !force && highest < reorderWindow {
			return // the missing packet may still come
		}
		if lowest > maxConceal {
			r.h.discontinuity()
			r.next += lowest
			continue
		}
		var next *slot
		if lowest == 1 {
			next = &r.ring[(r.next+1)%ringSize]
		}
		r.h.lost(next)
		r.next++
	}
}
