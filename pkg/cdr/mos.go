package cdr

import (
	"math"
	"strings"
)

// codecImpairment holds the E-model equipment impairment Ie and packet-loss
// robustness Bpl of a codec (ITU-T G.113 Appendix I for G.711 with PLC;
// the Opus and G.722 figures are the usual narrowband-equivalent estimates,
// since G.107 has no entries for them).
var codecImpairment = map[string]struct{ ie, bpl float64 }{
	"pcmu": {0, 25.1},
	"pcma": {0, 25.1},
	"g722": {0, 25.1},
	"opus": {0, 30}, // in-band FEC and a strong PLC make it more loss-tolerant
}

// unknownCodec is assumed for a codec not listed: mildly impaired, weak PLC.
var unknownCodec = struct{ ie, bpl float64 }{10, 10}

// EstimateMOS estimates the listening quality (MOS-CQE, 1..4.5) of a call
// from the simplified E-model of ITU-T G.107: R = 93.2 - Id - Ie,eff.
// codec is the SDP name (PCMU, PCMA, opus, G722; case-insensitive); loss is
// the fraction of packets lost (0..1); jitterMs the interarrival jitter;
// delayMs the one-way network delay (0 if unknown). Jitter counts twice
// towards delay because a jitter buffer holds about two jitters of audio.
func EstimateMOS(codec string, loss float64, jitterMs float64, delayMs float64) float64 {
	imp, ok := codecImpairment[strings.ToLower(codec)]
	if !ok {
		imp = unknownCodec
	}
	loss = clamp(loss, 0, 1)
	jitterMs = clamp(jitterMs, 0, 10000)
	delayMs = clamp(delayMs, 0, 10000)

	// Effective one-way delay: network, jitter buffer, and ~10 ms of
	// packetisation/codec lookahead.
	d := delayMs + 2*jitterMs + 10
	id := 0.024 * d
	if d > 177.3 {
		id += 0.11 * (d - 177.3)
	}

	// Random loss (BurstR = 1).
	ppl := loss * 100
	ieEff := imp.ie + (95-imp.ie)*ppl/(ppl+imp.bpl)

	return mosFromR(93.2 - id - ieEff)
}

// mosFromR is the G.107 Annex B mapping from the rating factor R to MOS.
func mosFromR(r float64) float64 {
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return 1 + 0.035*r + r*(r-60)*(100-r)*7e-6
}

// clamp limits v to [lo, hi]; NaN counts as lo, so a broken statistic
// cannot turn the estimate into NaN.
func clamp(v, lo, hi float64) float64 {
	switch {
	case math.IsNaN(v) || v < lo:
		return lo
	case v > hi:
		return hi
	}
	return v
}
