package media

import (
	"sync/atomic"
	"time"
)

// LegStats is a snapshot of a leg's counters, for metrics, CDRs and MOS.
type LegStats struct {
	PacketsIn, PacketsOut uint64
	BytesIn, BytesOut     uint64 // whole RTP packets as seen on the wire
	// Dropped counts packets discarded on receive (unlatched source,
	// malformed, SRTP failures); the reason goes to OnDrop.
	Dropped uint64
	// Lost is the RFC 3550 cumulative number of packets lost (expected minus
	// received, from sequence numbers; negative with duplicates), summed over
	// every source the peer has used on this leg.
	Lost int64
	// Jitter is the RFC 3550 interarrival jitter of the current source, in ms.
	Jitter float64
	// LastReceived is when the last accepted RTP packet arrived; zero if none.
	LastReceived time.Time
	// FirstReceived is when the first accepted RTP packet arrived; zero if none.
	FirstReceived time.Time

	// What the peer reports about our stream in its RTCP SR/RR.
	RemoteLost         int64   // cumulative
	RemoteFractionLost float64 // 0..1, over the peer's last report interval
	RemoteJitter       float64 // ms
	RTT                time.Duration
}

// RFC 3550 Appendix A.1 limits.
const (
	maxDropout  = 3000
	maxMisorder = 100
)

// recvStats follows RFC 3550 A.1/A.8 for the incoming stream. update runs on
// the reading goroutine only; everything another goroutine reads (Stats, the
// RTCP sender) is published through atomics, so readers never block the
// packet path.
type recvStats struct {
	clockRate uint64
	epoch     time.Time

	// reader-owned state
	have        bool
	ssrc        uint32
	maxSeq      uint16
	cycles      uint32
	baseSeq     uint32
	badSeq      uint32
	received    uint64 // for the current source
	lastTransit uint32
	jitter      uint32 // in 1/16 timestamp units, as in A.8

	// published
	packets    atomic.Uint64
	bytes      atomic.Uint64
	pubSSRC    atomic.Uint32
	pubHave    atomic.Bool
	pubExtMax  atomic.Uint32 // cycles + max seq
	pubBase    atomic.Uint32
	pubRecv    atomic.Uint64 // received for the current source
	pubJitter  atomic.Uint32
	lostBefore atomic.Int64 // lost by earlier sources
	lastRecv   atomic.Int64 // unix nanos
	firstRecv  atomic.Int64 // unix nanos, stored with the first source
}

func (s *recvStats) initSeq(seq uint16) {
	s.baseSeq = uint32(seq)
	s.maxSeq = seq
	s.badSeq = 1 << 16 // no bad sequence seen yet (out of the 16-bit range)
	s.cycles = 0
	s.received = 0
}

// update accounts one accepted packet whose header has been validated.
func (s *recvStats) update(pkt []byte, now time.Time) {
	s.packets.Add(1)
	s.bytes.Add(uint64(len(pkt)))
	s.lastRecv.Store(now.UnixNano())

	seq, ssrc := Seq(pkt), SSRC(pkt)
	if !s.have || ssrc != s.ssrc {
		// A new source (or the first): keep what the old one lost in the
		// cumulative total, then start over as A.1 does for a new SSRC.
		if s.have {
			s.lostBefore.Add(s.lost())
		} else {
			s.firstRecv.Store(now.UnixNano())
		}
		s.have, s.ssrc = true, ssrc
		s.initSeq(seq)
		s.jitter = 0
		s.lastTransit = s.transit(pkt, now)
		s.received = 1
		s.publish()
		return
	}

	udelta := seq - s.maxSeq
	switch {
	case udelta < maxDropout:
		if seq < s.maxSeq {
			s.cycles += 1 << 16
		}
		s.maxSeq = seq
	case udelta <= 1<<16-maxMisorder:
		// A big jump: the source restarted, or a stray packet. Two in
		// sequence confirm a restart; otherwise don't count it.
		if uint32(seq) != s.badSeq {
			s.badSeq = uint32(seq+1) & 0xffff
			return
		}
		s.lostBefore.Add(s.lost())
		s.initSeq(seq)
		s.lastTransit = s.transit(pkt, now)
		s.received = 1
		s.publish()
		return
	default:
		// duplicate or reordered: counted as received, max unchanged
	}
	s.received++

	t := s.transit(pkt, now)
	d := int32(t - s.lastTransit)
	s.lastTransit = t
	if d < 0 {
		d = -d
	}
	s.jitter += uint32(d) - ((s.jitter + 8) >> 4)
	s.publish()
}

// transit is the relative transit time in timestamp units (A.8).
func (s *recvStats) transit(pkt []byte, now time.Time) uint32 {
	us := uint64(now.Sub(s.epoch) / time.Microsecond)
	arrival := uint32(us * s.clockRate / 1e6)
	return arrival - Timestamp(pkt)
}

func (s *recvStats) lost() int64 {
	expected := int64(s.cycles+uint32(s.maxSeq)) - int64(s.baseSeq) + 1
	return expected - int64(s.received)
}

func (s *recvStats) publish() {
	// An atomic store is a locked instruction on amd64 and a load is
	// not: the fields that rarely change are stored only when they do.
	if s.pubSSRC.Load() != s.ssrc {
		s.pubSSRC.Store(s.ssrc)
	}
	s.pubExtMax.Store(s.cycles + uint32(s.maxSeq))
	if s.pubBase.Load() != s.baseSeq {
		s.pubBase.Store(s.baseSeq)
	}
	s.pubRecv.Store(s.received)
	if s.pubJitter.Load() != s.jitter {
		s.pubJitter.Store(s.jitter)
	}
	if !s.pubHave.Load() {
		s.pubHave.Store(true)
	}
}

// totalLost is the cumulative loss over all sources, from published values.
func (s *recvStats) totalLost() int64 {
	return s.lostBefore.Load() + s.currentLost()
}

func (s *recvStats) currentLost() int64 {
	if !s.pubHave.Load() {
		return 0
	}
	expected := int64(s.pubExtMax.Load()) - int64(s.pubBase.Load()) + 1
	return expected - int64(s.pubRecv.Load())
}

// times fills in when the first and the last packet arrived.
func (s *recvStats) times(st *LegStats) {
	if t := s.firstRecv.Load(); t != 0 {
		st.FirstReceived = time.Unix(0, t)
	}
	if t := s.lastRecv.Load(); t != 0 {
		st.LastReceived = time.Unix(0, t)
	}
}

// jitterMs converts the published jitter to milliseconds.
func (s *recvStats) jitterMs() float64 {
	return float64(s.pubJitter.Load()) / 16 * 1000 / float64(s.clockRate)
}

// LoopStat is one media loop's share of the work.
type LoopStat struct {
	Busy    time.Duration // spent in rounds since the loop started
	Sockets int           // sockets it serves now
}
