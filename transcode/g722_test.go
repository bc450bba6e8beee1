package transcode

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mediarelay/mediarelay/transcode/tone"
)

func g722RoundTrip(pcm []int16) []int16 {
	enc, dec := NewG722Encoder(), NewG722Decoder()
	code := make([]byte, len(pcm)/2)
	n := enc.Encode(code, pcm)
	out := make([]int16, 2*n)
	dec.Decode(out, code[:n])
	return out
}

// skip drops the codec's start-up transient (the adaptive quantiser starts
// from its smallest step) before measuring.
const g722Settle = 1600 // 100 ms at 16 kHz

// TestG722ToneSNR: a 1 kHz tone at -12 dBFS must come back with SNR ≥ 40 dB.
// A steady lower-band tone gets 6 bits per sample of ADPCM (measured here:
// 47 dB at 1 kHz, 59 dB at 400 Hz); the upper band (4–8 kHz) gets 2 bits,
// so a 5 kHz tone only needs 15 dB (measured 22 dB).
func TestG722ToneSNR(t *testing.T) {
	for _, c := range []struct {
		freqs []float64
		amp   float64
		min   float64
	}{
		{[]float64{1000}, 0.25, 40},
		{[]float64{400}, 0.25, 40},
		{[]float64{400, 1000}, 0.2, 40},
		{[]float64{1000}, 0.02, 35}, // -34 dBFS: the scale factor must adapt down
		{[]float64{5000}, 0.25, 15}, // upper band: 2 bits per sample
	} {
		ref := tone.Generate(c.freqs, 16000, 16000, c.amp)
		got := g722RoundTrip(ref)
		snr := tone.SNR(ref[g722Settle:], got[g722Settle:])
		t.Logf("G.722 %v Hz amp %.2f: SNR %.1f dB, delay %d samples", c.freqs, c.amp, snr, tone.Delay(ref[g722Settle:8000], got[g722Settle:8000], 40))
		if snr < c.min {
			t.Errorf("G.722 %v Hz amp %.2f: SNR %.1f dB < %.0f", c.freqs, c.amp, snr, c.min)
		}
		for _, f := range c.freqs {
			if !tone.Detect(got[g722Settle:], 16000, f) {
				t.Errorf("G.722: %v Hz not detected after round trip", f)
			}
		}
	}
}

// TestG722InverseOnManySignals checks the decoder inverts the encoder on
// chirps and band-limited noise at several levels: a mistake in any table
// or in the order of the QMF taps shows up as a collapse of SNR.
func TestG722InverseOnManySignals(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for trial := range 12 {
		amp := []float64{0.05, 0.2, 0.5}[trial%3]
		pcm := make([]int16, 16000)
		switch trial % 2 {
		case 0: // chirp 100 Hz → 3.5 kHz
			for i := range pcm {
				tt := float64(i) / 16000
				f := 100 + 3400*tt
				pcm[i] = int16(amp * 32767 * math.Sin(2*math.Pi*f*tt))
			}
		case 1: // noise low-passed by a moving average (speech-like tilt)
			var acc float64
			for i := range pcm {
				acc = 0.9*acc + 0.1*(r.Float64()*2-1)
				pcm[i] = int16(max(-32768, min(32767, acc*amp*32767*4)))
			}
		}
		got := g722RoundTrip(pcm)
		snr := tone.SNR(pcm[g722Settle:], got[g722Settle:])
		// The QMF pair (two 24-tap filters) delays the signal by 23
		// samples at 16 kHz; a wrong tap order moves or smears this.
		if d := tone.Delay(pcm[g722Settle:], got[g722Settle:], 64); d < 21 || d > 25 {
			t.Errorf("trial %d: codec delay %d samples, want ≈23", trial, d)
		}
		if snr < 20 {
			t.Errorf("trial %d (amp %.2f): SNR %.1f dB < 20", trial, amp, snr)
		}
	}
	// Silence in, near-silence out (no limit cycles or bias).
	got := g722RoundTrip(make([]int16, 8000))
	for i, s := range got {
		if s > 16 || s < -16 {
			t.Fatalf("silence decoded to %d at sample %d", s, i)
		}
	}
}

// TestG722SplitInput: encoding in odd-sized chunks gives the same stream as
// one call.
func TestG722SplitInput(t *testing.T) {
	pcm := tone.Generate([]float64{700, 2300}, 16000, 3201, 0.3)
	whole := make([]byte, 1601)
	n := NewG722Encoder().Encode(whole, pcm)
	enc := NewG722Encoder()
	var parts []byte
	buf := make([]byte, 200)
	for rest := pcm; len(rest) > 0; {
		k := min(len(rest), 77)
		m := enc.Encode(buf, rest[:k])
		parts = append(parts, buf[:m]...)
		rest = rest[k:]
	}
	if n != 1600 || string(parts) != string(whole[:n]) {
		t.Fatalf("split encode differs: %d bytes vs %d", len(parts), n)
	}
}

func TestG722NoAllocs(t *testing.T) {
	enc, dec := NewG722Encoder(), NewG722Decoder()
	pcm := make([]int16, 320)
	code := make([]byte, 160)
	if n := testing.AllocsPerRun(100, func() {
		enc.Encode(code, pcm)
		dec.Decode(pcm, code)
	}); n != 0 {
		t.Errorf("G.722 allocates %v times per frame", n)
	}
}

func BenchmarkG722Encode20ms(b *testing.B) {
	enc := NewG722Encoder()
	pcm := tone.Generate([]float64{1000}, 16000, 320, 0.25)
	code := make([]byte, 160)
	b.ReportAllocs()
	for b.Loop() {
		enc.Encode(code, pcm)
	}
}

func BenchmarkG722Decode20ms(b *testing.B) {
	dec := NewG722Decoder()
	code := make([]byte, 160)
	NewG722Encoder().Encode(code, tone.Generate([]float64{1000}, 16000, 320, 0.25))
	pcm := make([]int16, 320)
	b.ReportAllocs()
	for b.Loop() {
		dec.Decode(pcm, code)
	}
}

// TestG722QuantizerSearch checks the binary search against the linear scan
// of the Recommendation for every scale factor SCALEL can produce, at every
// decision boundary (±1) and the extremes.
func TestG722QuantizerSearch(t *testing.T) {
	dets := map[int32]bool{}
	for nb := int32(0); nb <= 18432; nb++ {
		var b adpcmBand // nb starts at 0, so scale sets nb to exactly this nb
		b.scale(nb, 18432, 8)
		dets[b.det] = true
	}
	for det := range dets {
		mags := []int32{0, 32767}
		for i := 1; i < 30; i++ {
			th := (q6[i] * det) >> 12
			mags = append(mags, th-1, th, th+1)
		}
		for _, mag := range mags {
			if mag < 0 || mag > 32767 {
				continue
			}
			i := 1
			for ; i < 30; i++ {
				if mag < (q6[i]*det)>>12 {
					break
				}
			}
			if got := quantL(mag, det); got != i {
				t.Fatalf("quantL(%d, %d) = %d, linear scan says %d", mag, det, got, i)
			}
		}
	}
	if len(dets) < 100 {
		t.Fatalf("only %d scale factors enumerated", len(dets))
	}
}
