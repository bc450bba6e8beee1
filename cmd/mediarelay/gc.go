package main

import (
	"os"
	"runtime/debug"
)

// gcPercent is serve's GOGC unless the environment sets one. Nearly all of
// a relay's heap is per-call state that lives as long as its call, and an
// established call allocates almost nothing (about 0.6 KB per call-second
// at 400 PCMU calls), so the collector's default headroom, a second live
// heap's worth, bought no CPU: it was about a fifth of the RSS per call.
// At 25 the collections come during call set-up, beside DTLS handshakes
// that cost far more (BENCHMARKS.md, stop 26).
const gcPercent = 25

// tuneGC applies gcPercent; an operator's GOGC wins.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	debug.SetGCPercent(gcPercent)
}
