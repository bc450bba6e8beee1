//go:build linux

package media

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// A send made while a media loop handles a packet is queued in the loop's
// outbox and leaves with the rest of the round's. The loop is found from
// the packet being forwarded: a loop and the shards it serves receive into
// buffers of their own, and only the loop's goroutine touches them, so a
// packet that lies in one of them is being handled on that loop's
// goroutine now. A send from anywhere else (a transcoder's output, RTCP
// reports, DTLS, a goroutine reading with ReadRTP) goes at once.

type bufOwner struct {
	lo, hi uintptr
	lp     *loop
}

var (
	ownersMu sync.Mutex
	owners   atomic.Pointer[[]bufOwner]
)

// registerBuffers records that r's buffers are filled on lp's goroutine.
func registerBuffers(r *batchReader, lp *loop) {
	if r == nil || len(r.bufs) == 0 {
		return
	}
	last := r.bufs[len(r.bufs)-1]
	registerMemory(unsafe.Pointer(unsafe.SliceData(r.bufs[0])), unsafe.Pointer(unsafe.SliceData(last)), uintptr(cap(last)), lp)
}

// registerMemory records that [first, last+size) is filled on lp's goroutine.
func registerMemory(first, last unsafe.Pointer, size uintptr, lp *loop) {
	lo, hi := uintptr(first), uintptr(last)+size
	ownersMu.Lock()
	defer ownersMu.Unlock()
	var cur []bufOwner
	if p := owners.Load(); p != nil {
		cur = *p
	}
	next := append(slices.Clip(cur), bufOwner{lo: lo, hi: hi, lp: lp})
	owners.Store(&next)
}

// unregisterBuffers forgets r's buffers (a shard closing).
func unregisterBuffers(r *batchReader) {
	if r == nil || len(r.bufs) == 0 {
		return
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(r.bufs[0])))
	ownersMu.Lock()
	defer ownersMu.Unlock()
	p := owners.Load()
	if p == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*p), func(o bufOwner) bool { return o.lo == lo })
	owners.Store(&next)
}

// loopHandling returns the loop whose goroutine is handling pkt, or nil.
func loopHandling(pkt []byte) *loop {
	if len(pkt) == 0 {
		return nil
	}
	p := owners.Load()
	if p == nil {
		return nil
	}
	a := uintptr(unsafe.Pointer(unsafe.SliceData(pkt)))
	for _, o := range *p {
		if a >= o.lo && a < o.hi {
			return o.lp
		}
	}
	return nil
}

// scratchFor returns the buffers a write of pkt builds its plain and its
// encrypted packet in, and pkt's arrival time (packetTime), from one
// lookup of the handling loop: the loop's own buffers when a loop is
// handling pkt, else nil ones, and the writer uses its own (made on the
// first write off a loop, so that a call served by loops has none). A
// loop's stay in cache from packet to packet, where a leg's or session's
// buffers, touched once per 20 ms each among hundreds of calls, miss on
// every line written.
func scratchFor(pkt []byte) (plain, sealed []byte, now time.Time) {
	if lp := loopHandling(pkt); lp != nil {
		return lp.plain, lp.sealed, lp.now
	}
	return nil, nil, time.Now()
}

// packetTime is when pkt, which a leg received, arrived: the start of
// the round that is handling it when a loop is (its packets arrived
// before that), else now. A round's packets thus share one clock read.
func packetTime(pkt []byte) time.Time {
	if lp := loopHandling(pkt); lp != nil {
		return lp.now
	}
	return time.Now()
}

// sendFor sends b to dst for a packet being forwarded, in: with the
// round's other sends when in is being handled on a loop that batches,
// at once otherwise.
func (s *udpSender) sendFor(in, b []byte, dst netip.AddrPort) error {
	if lp := loopHandling(in); lp != nil && lp.out != nil {
		if s.refs.Load()&sendClosed != 0 {
			return net.ErrClosed
		}
		return lp.out.queue(s, b, dst)
	}
	return s.sendTo(b, dst)
}
