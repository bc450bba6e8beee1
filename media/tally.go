package media

import "sync"

// StatsSource is a leg whose counters can be read: an RTPLeg or a
// WebRTCLeg.
type StatsSource interface{ Stats() LegStats }

// Tally is what of two legs' packet and byte counters has already been
// reported (to the relay's metrics): the legs keep their own counts, so
// the packet path touches no shared counter, and whoever reports adds
// what is new at each scrape and at the end of the call.
type Tally struct {
	mu   sync.Mutex
	legs [2]StatsSource // the legs reported; a transfer may swap one in
	last [2]LegStats
}

// Moved returns what legs a and b moved since they were last reported
// and marks it reported. A leg not reported before (swapped in) counts
// from zero.
func (t *Tally) Moved(a, b StatsSource) (da, db LegStats) {
	as, bs := a.Stats(), b.Stats()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, l := range [2]StatsSource{a, b} {
		if t.legs[i] != l {
			t.legs[i], t.last[i] = l, LegStats{}
		}
	}
	da, db = countsSince(as, t.last[0]), countsSince(bs, t.last[1])
	t.last = [2]LegStats{as, bs}
	return da, db
}

// countsSince is cur's packet and byte counters minus before's.
func countsSince(cur, before LegStats) LegStats {
	d := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return LegStats{
		PacketsIn: d(cur.PacketsIn, before.PacketsIn), PacketsOut: d(cur.PacketsOut, before.PacketsOut),
		BytesIn: d(cur.BytesIn, before.BytesIn), BytesOut: d(cur.BytesOut, before.BytesOut),
	}
}
