package tone

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

func TestGoertzelAndDetect(t *testing.T) {
	pcm := Generate([]float64{400, 1000}, 8000, 1600, 0.25)
	for _, f := range []float64{400, 1000} {
		if p := Goertzel(pcm, 8000, f); math.Abs(p-0.0625) > 0.005 {
			t.Errorf("Goertzel(%v) = %v, want ≈0.0625", f, p)
		}
		if !Detect(pcm, 8000, f) {
			t.Errorf("Detect(%v) = false on a dual tone containing it", f)
		}
	}
	for _, f := range []float64{697, 1633, 2000} {
		if Detect(pcm, 8000, f) {
			t.Errorf("Detect(%v) = true on a 400+1000 Hz signal", f)
		}
	}
	if Detect(make([]int16, 1600), 8000, 1000) {
		t.Error("Detect found a tone in silence")
	}
}

func TestDelayAndSNR(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ref := make([]int16, 4000)
	for i := range ref {
		ref[i] = int16(r.IntN(20000) - 10000)
	}
	for _, lag := range []int{0, 7, 123, -5} {
		got := make([]int16, len(ref))
		for i := range got {
			if j := i - lag; j >= 0 && j < len(ref) {
				got[i] = ref[j]
			}
		}
		if d := Delay(ref, got, 200); d != lag {
			t.Errorf("Delay = %d, want %d", d, lag)
		}
		if s := SNR(ref, got); s < 60 {
			t.Errorf("SNR of a shifted copy (lag %d) = %.1f dB, want ≥ 60", lag, s)
		}
	}
	noisy := make([]int16, len(ref))
	for i := range noisy {
		noisy[i] = ref[i] + int16(r.IntN(201)-100)
	}
	// Signal RMS ≈ 5774, noise RMS ≈ 58: about 40 dB.
	if s := SNR(ref, noisy); s < 37 || s > 43 {
		t.Errorf("SNR with known noise = %.1f dB, want ≈40", s)
	}
}

func TestWAVRoundTrip(t *testing.T) {
	pcm := Generate([]float64{440}, 16000, 321, 0.5)
	var buf bytes.Buffer
	if err := WriteWAV(&buf, pcm, 16000); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 44+2*len(pcm) {
		t.Fatalf("WAV is %d bytes, want %d", buf.Len(), 44+2*len(pcm))
	}
	got, rate, err := ReadWAV(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if rate != 16000 || !equal(got, pcm) {
		t.Fatalf("ReadWAV gave rate %d, %d samples; want 16000, %d identical", rate, len(got), len(pcm))
	}
	if _, _, err := ReadWAV(bytes.NewReader([]byte("RIFF\x00\x00\x00\x00WAVEjunk"))); err == nil {
		t.Error("ReadWAV accepted a truncated file")
	}
}

func equal(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
