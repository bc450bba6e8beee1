package benchmarks

import (
	"strings"
	"testing"
)

// TestCPURatio: the side-by-side line gives mediarelay's CPU per
// call-second over rtpengine's when both carried the step cleanly, and no
// ratio when either was past its knee (there its CPU paid for only part
// of the work, as rtpengine's did transcoding 120 calls on two cores).
func TestCPURatio(t *testing.T) {
	result := func(target string, cpu float64, lossPct float64, drops int64) *Result {
		r := &Result{Target: target, Concurrent: 60, SendRatePct: 100, RelayUDPDrops: drops}
		r.Relay.Measured = true
		r.Relay.CPUMicrosPerCallS = cpu
		r.Down.LossPct = lossPct
		r.Up.Expected, r.Down.Expected = 1000, 1000
		return r
	}
	if got := cpuRatio([]*Result{result("mediarelay", 500, 0, 0), result("rtpengine", 2000, 0, 0)}, 0.1); got != "CPU per call-second, mediarelay / rtpengine = 0.25" {
		t.Errorf("both clean: %q", got)
	}
	for name, rs := range map[string][]*Result{
		"rtpengine lost audio":  {result("mediarelay", 500, 0, 0), result("rtpengine", 1000, 80, 0)},
		"rtpengine dropped":     {result("mediarelay", 500, 0, 0), result("rtpengine", 1000, 0, 700)},
		"mediarelay lost audio": {result("mediarelay", 500, 5, 0), result("rtpengine", 1000, 0, 0)},
	} {
		if got := cpuRatio(rs, 0.1); !strings.Contains(got, "no ratio") || strings.Contains(got, "=") {
			t.Errorf("%s: %q, want no ratio", name, got)
		}
	}
}
