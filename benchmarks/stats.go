package benchmarks

import (
	"math"
	"sort"
	"time"
)

// RecvStats tracks one received RTP stream the way RFC 3550 (appendix A.1,
// A.8) does: extended highest sequence number, packets received, and
// interarrival jitter. Unlike the RFC's sketch it ignores duplicates (a
// bitmap over the last seqWindow sequence numbers), so a duplicated packet
// cannot hide a lost one. It is not safe for concurrent use.
type RecvStats struct {
	clockRate   float64
	started     bool
	t0          time.Time // arrival of the first packet: arrival clock origin
	baseExt     int64     // extended seq of the first packet
	maxExt      int64     // highest extended seq seen
	received    uint64
	duplicates  uint64
	jitter      float64 // in timestamp units, RFC 3550 J
	lastTransit uint32
	seen        [seqWindow / 64]uint64
}

// seqWindow is how far back a duplicate is recognised. Reordering deeper than
// this counts a late packet as received but cannot tell it from a duplicate.
const seqWindow = 1024

// NewRecvStats returns stats for a stream whose RTP clock runs at clockRate Hz.
func NewRecvStats(clockRate int) *RecvStats {
	return &RecvStats{clockRate: float64(clockRate)}
}

// Update records one packet with its RTP sequence number, RTP timestamp and
// local arrival time.
func (s *RecvStats) Update(seq uint16, ts uint32, arrival time.Time) {
	// Arrival in RTP timestamp units; only differences matter, so the
	// truncation to 32 bits wraps exactly like the RTP timestamp does.
	// Measured from the first packet, in integer nanoseconds, so the product
	// with the clock rate neither overflows nor loses precision.
	if !s.started {
		s.t0 = arrival
	}
	arr := uint32(int64(arrival.Sub(s.t0)) * int64(s.clockRate) / 1e9)
	if !s.started {
		s.started = true
		s.baseExt = int64(seq)
		s.maxExt = int64(seq)
		s.received = 1
		s.mark(int64(seq))
		s.lastTransit = arr - ts
		return
	}
	// The signed 16-bit distance from the highest seq handles wrap-around.
	delta := int64(int16(seq - uint16(s.maxExt)))
	ext := s.maxExt + delta
	if delta > 0 {
		// Forget the marks the window slides over.
		for e := s.maxExt + 1; e <= ext && e <= s.maxExt+seqWindow; e++ {
			s.unmark(e)
		}
		s.maxExt = ext
	} else if ext <= s.maxExt-seqWindow || ext < s.baseExt {
		// Too old to tell from a duplicate (or from before the stream began):
		// counting it would make loss negative.
		s.duplicates++
		return
	} else if s.marked(ext) {
		s.duplicates++
		return
	}
	s.mark(ext)
	s.received++
	transit := arr - ts
	d := float64(int32(transit - s.lastTransit))
	s.lastTransit = transit
	s.jitter += (math.Abs(d) - s.jitter) / 16
}

func (s *RecvStats) mark(ext int64) {
	i := uint64(ext) % seqWindow
	s.seen[i/64] |= 1 << (i % 64)
}

func (s *RecvStats) unmark(ext int64) {
	i := uint64(ext) % seqWindow
	s.seen[i/64] &^= 1 << (i % 64)
}

func (s *RecvStats) marked(ext int64) bool {
	i := uint64(ext) % seqWindow
	return s.seen[i/64]&(1<<(i%64)) != 0
}

// StreamSnapshot is a RecvStats reading at one instant.
type StreamSnapshot struct {
	Expected   int64   // packets expected: highest ext seq - first + 1
	Received   int64   // distinct packets received
	Duplicates int64   // duplicates (and too-late packets) ignored
	JitterMs   float64 // RFC 3550 interarrival jitter in milliseconds
}

// Snapshot reads the counters.
func (s *RecvStats) Snapshot() StreamSnapshot {
	if !s.started {
		return StreamSnapshot{}
	}
	return StreamSnapshot{
		Expected:   s.maxExt - s.baseExt + 1,
		Received:   int64(s.received),
		Duplicates: int64(s.duplicates),
		JitterMs:   s.jitter / s.clockRate * 1000,
	}
}

// IntervalLoss is the loss between two snapshots of the same stream, as
// RFC 3550 A.3 computes the "fraction lost" of a report interval. It is
// clamped at zero: late packets from before the interval can arrive in it.
func IntervalLoss(a, b StreamSnapshot) (expected, lost int64) {
	expected = b.Expected - a.Expected
	lost = expected - (b.Received - a.Received)
	if lost < 0 {
		lost = 0
	}
	return expected, lost
}

// Percentile returns the p-th percentile (0 < p <= 100) of xs by the
// nearest-rank method; xs need not be sorted and is not modified. It returns
// NaN for an empty slice.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(s) {
		rank = len(s)
	}
	return s[rank-1]
}

// Dist summarises a sample: count and the percentiles the report shows.
type Dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Summarize computes a Dist of xs. An empty sample gives the zero Dist
// (N == 0 says there was nothing), not NaN, which JSON cannot carry.
func Summarize(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return Dist{
		N:   len(s),
		P50: percentileSorted(s, 50),
		P95: percentileSorted(s, 95),
		P99: percentileSorted(s, 99),
		Max: s[len(s)-1],
	}
}
