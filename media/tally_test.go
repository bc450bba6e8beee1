package media

import "testing"

type fixedStats LegStats

func (s *fixedStats) Stats() LegStats { return LegStats(*s) }

// TestTallyMoved: each report has only what is new, and a leg swapped in
// counts from zero.
func TestTallyMoved(t *testing.T) {
	var tally Tally
	a, b := &fixedStats{PacketsIn: 10, BytesIn: 1000}, &fixedStats{PacketsOut: 5}
	da, db := tally.Moved(a, b)
	if da.PacketsIn != 10 || da.BytesIn != 1000 || db.PacketsOut != 5 {
		t.Fatalf("first report %+v %+v", da, db)
	}
	a.PacketsIn = 15
	if da, db = tally.Moved(a, b); da.PacketsIn != 5 || db.PacketsOut != 0 {
		t.Fatalf("second report %+v %+v", da, db)
	}
	c := &fixedStats{PacketsOut: 3}
	if _, db = tally.Moved(a, c); db.PacketsOut != 3 {
		t.Fatalf("swapped-in leg reported %+v, want its whole count", db)
	}
}
