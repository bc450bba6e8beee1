// Package tone generates and analyses test signals: sine tones, Goertzel
// tone detection, signal-to-noise ratio and delay by cross-correlation, and
// 16-bit mono WAV files. It is a normal (non-test) package so that tests in
// other packages, and the benchmarks, can check the audio a call carries.
package tone

import (
	"math"
)

// Generate returns samples of the sum of sine tones at freqs (Hz), sampled
// at rate (Hz). amp is the peak amplitude of each tone as a fraction of full
// scale (0.25 is about -12 dBFS); the sum is clipped to the int16 range.
// The tones start at phase zero, so two calls with the same arguments give
// the same signal.
func Generate(freqs []float64, rate int, samples int, amp float64) []int16 {
	if samples <= 0 || rate <= 0 {
		return nil
	}
	out := make([]int16, samples)
	for i := range out {
		var v float64
		for _, f := range freqs {
			v += math.Sin(2 * math.Pi * f * float64(i) / float64(rate))
		}
		out[i] = clip16(v * amp * 32767)
	}
	return out
}

func clip16(v float64) int16 {
	switch {
	case v >= math.MaxInt16:
		return math.MaxInt16
	case v <= math.MinInt16:
		return math.MinInt16
	}
	return int16(math.Round(v))
}

// Goertzel returns the power of pcm at freq (Hz) as the squared peak
// amplitude of that component relative to full scale: a full-scale sine at
// freq gives about 1.0, one at amplitude 0.25 about 0.0625, and silence 0.
// freq need not fall on a DFT bin.
func Goertzel(pcm []int16, rate int, freq float64) float64 {
	n := len(pcm)
	if n == 0 || rate <= 0 {
		return 0
	}
	w := 2 * math.Pi * freq / float64(rate)
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, x := range pcm {
		s0 := float64(x)/32768 + coeff*s1 - s2
		s2, s1 = s1, s0
	}
	// |X(w)|^2 from the last two states of the recursion.
	re := s1 - s2*math.Cos(w)
	im := s2 * math.Sin(w)
	mag := math.Sqrt(re*re+im*im) * 2 / float64(n)
	return mag * mag
}

// meanSquare returns the mean power of pcm relative to full scale, on the
// same scale as Goertzel halved (a full-scale sine has mean square 0.5).
func meanSquare(pcm []int16) float64 {
	if len(pcm) == 0 {
		return 0
	}
	var e float64
	for _, x := range pcm {
		v := float64(x) / 32768
		e += v * v
	}
	return e / float64(len(pcm))
}

// Detection thresholds. A tone counts as present when it carries at least
// DetectFraction of the signal's energy and is louder than DetectFloor.
// 0.2 lets either tone of an equal-level pair (0.5 each) through codec
// noise, yet rejects a tone that is merely leakage or distortion of
// another frequency.
const (
	DetectFraction = 0.2
	DetectFloor    = 1e-5 // about -50 dBFS peak
)

// Detect reports whether pcm contains a tone at freq (Hz): its Goertzel
// power is above DetectFloor and it holds at least DetectFraction of the
// total energy.
func Detect(pcm []int16, rate int, freq float64) bool {
	p := Goertzel(pcm, rate, freq)
	if p < DetectFloor {
		return false
	}
	total := meanSquare(pcm)
	if total == 0 {
		return false
	}
	// A sine of peak a has mean square a²/2, so p/2 is its share.
	return p/2 >= DetectFraction*total
}

// Delay returns the lag, in samples within [-maxLag, maxLag], at which got
// best matches ref by normalised cross-correlation: a positive lag means got
// is late, got[i+lag] ≈ ref[i]. Use a non-periodic signal (speech, a chirp,
// noise): a pure tone matches at every period.
func Delay(ref, got []int16, maxLag int) int {
	best, bestLag := math.Inf(-1), 0
	for lag := -maxLag; lag <= maxLag; lag++ {
		c := Correlation(ref, got, lag)
		if c > best {
			best, bestLag = c, lag
		}
	}
	return bestLag
}

// Correlation is the normalised cross-correlation of ref[i] and got[i+lag]
// over their overlap: 1 for identical shapes, about 0 for unrelated
// signals. Use it to check that the lag Delay found is a real match. It
// returns -Inf if either overlap is silent.
func Correlation(ref, got []int16, lag int) float64 {
	var xy, xx, yy float64
	for i, r := range ref {
		j := i + lag
		if j < 0 || j >= len(got) {
			continue
		}
		x, y := float64(r), float64(got[j])
		xy += x * y
		xx += x * x
		yy += y * y
	}
	if xx == 0 || yy == 0 {
		return math.Inf(-1)
	}
	return xy / math.Sqrt(xx*yy)
}

// SNR returns the signal-to-noise ratio of got against ref in dB, after
// shifting got by the lag Delay finds (searched up to a quarter of the
// signal, at most 4000 samples). The noise is the sample-by-sample
// difference over the overlap; no gain is fitted, so a level change counts
// as noise. It returns +Inf for identical signals and -Inf when there is
// nothing to compare.
func SNR(ref, got []int16) float64 {
	maxLag := min(len(ref), len(got)) / 4
	maxLag = min(maxLag, 4000)
	lag := Delay(ref, got, maxLag)
	var sig, noise float64
	for i, r := range ref {
		j := i + lag
		if j < 0 || j >= len(got) {
			continue
		}
		d := float64(r) - float64(got[j])
		sig += float64(r) * float64(r)
		noise += d * d
	}
	if sig == 0 {
		return math.Inf(-1)
	}
	if noise == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(sig/noise)
}
