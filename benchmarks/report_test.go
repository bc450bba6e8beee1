package benchmarks

import (
	"strings"
	"testing"
)

var limits = KneeLimits{LossPct: 0.1, DelayMs: 100}

// TestCPURatio: the side-by-side line gives mediarelay's CPU per
// call-second over rtpengine's when both carried the step cleanly, and no
// ratio when either was past its knee (there its CPU paid for only part
// of the work, as rtpengine's did transcoding 120 calls on two cores).
func TestCPURatio(t *testing.T) {
	// A relay past its capacity that queues: nothing lost, seconds late.
	queued := func(r *Result) *Result {
		r.Down.DelayMs = Dist{N: 1000, P50: 1480, P99: 2200}
		return r
	}
	result := func(target string, cpu float64, lossPct float64, drops int64) *Result {
		r := &Result{Target: target, Concurrent: 60, SendRatePct: 100, RelayUDPDrops: drops}
		r.Relay.Measured = true
		r.Relay.CPUMicrosPerCallS = cpu
		r.Down.LossPct = lossPct
		r.Up.Expected, r.Down.Expected = 1000, 1000
		return r
	}
	if got := cpuRatio([]*Result{result("mediarelay", 500, 0, 0), result("rtpengine", 2000, 0, 0)}, limits); got != "CPU per call-second, mediarelay / rtpengine = 0.25" {
		t.Errorf("both clean: %q", got)
	}
	// Delay within the bound, or not measured (through a transcoder),
	// leaves a step clean.
	ok := result("rtpengine", 2000, 0, 0)
	ok.Up.DelayMs = Dist{N: 1000, P99: 99}
	if got := cpuRatio([]*Result{result("mediarelay", 500, 0, 0), ok}, limits); !strings.HasSuffix(got, "= 0.25") {
		t.Errorf("delay within the bound: %q", got)
	}
	if q := queued(result("rtpengine", 2000, 0, 0)); !q.Clean(KneeLimits{LossPct: 0.1}) {
		t.Error("with the delay bound off, a queueing run is past the knee")
	}
	for name, rs := range map[string][]*Result{
		"rtpengine lost audio":  {result("mediarelay", 500, 0, 0), result("rtpengine", 1000, 80, 0)},
		"rtpengine dropped":     {result("mediarelay", 500, 0, 0), result("rtpengine", 1000, 0, 700)},
		"mediarelay lost audio": {result("mediarelay", 500, 5, 0), result("rtpengine", 1000, 0, 0)},
		"rtpengine queued":      {result("mediarelay", 500, 0, 0), queued(result("rtpengine", 1000, 0, 0))},
	} {
		if got := cpuRatio(rs, limits); !strings.Contains(got, "no ratio") || strings.Contains(got, "=") {
			t.Errorf("%s: %q, want no ratio", name, got)
		}
	}
}

// TestMedianRun: of several clean runs the step shows the one with the
// median CPU and keeps every run's figure and the first run's memory; a
// run past the knee makes the step past the knee whatever the others did;
// the ratio line then gives the medians' ratio and the run-by-run spread.
func TestMedianRun(t *testing.T) {
	run := func(cpu, lossPct float64) *Result {
		r := &Result{Target: "mediarelay", Concurrent: 60, SendRatePct: 100}
		r.Relay.Measured = true
		r.Relay.CPUMicrosPerCallS = cpu
		r.Down.LossPct = lossPct
		return r
	}
	runs := []*Result{run(900, 0), run(700, 0), run(1200, 0)}
	runs[0].Relay.MemPerCallBytes = 64 << 10 // later runs start from a grown heap
	m := medianRun(runs, limits)
	if m.Relay.CPUMicrosPerCallS != 900 || len(m.CPURuns) != 3 || m.CPURuns[1] != 700 {
		t.Errorf("median of 900, 700, 1200: %v (runs %v)", m.Relay.CPUMicrosPerCallS, m.CPURuns)
	}
	if m.Relay.MemPerCallBytes != 64<<10 {
		t.Errorf("memory per call %v, want the first run's", m.Relay.MemPerCallBytes)
	}
	if m := medianRun([]*Result{run(800, 0), run(600, 0)}, limits); m.Relay.CPUMicrosPerCallS != 600 {
		t.Errorf("median of two is the lower: %v", m.Relay.CPUMicrosPerCallS)
	}
	if m := medianRun([]*Result{run(700, 0), run(900, 3), run(800, 0)}, limits); m.Clean(limits) {
		t.Errorf("a step with a lossy run reads clean (%v)", m.Relay.CPUMicrosPerCallS)
	}
	re := medianRun([]*Result{run(2000, 0), run(1800, 0), run(2400, 0)}, limits)
	re.Target = "rtpengine"
	got := cpuRatio([]*Result{m, re}, limits)
	if !strings.HasPrefix(got, "CPU per call-second, mediarelay / rtpengine = 0.45 (medians of 3 alternated runs each; run by run 0.39–0.50)") {
		t.Errorf("ratio line %q", got)
	}
	if o := runOrder(2, 0); o[0] != 0 || o[1] != 1 {
		t.Errorf("first repeat order %v", o)
	}
	if o := runOrder(2, 1); o[0] != 1 || o[1] != 0 {
		t.Errorf("second repeat order %v", o)
	}
}
