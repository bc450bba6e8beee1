package browsertest

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteToneWAV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.wav")
	if err := WriteToneWAV(path, []float64{400, 1000}, 0.5); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if string(data[0:4]) != "RIFF" || string(data[8:16]) != "WAVEfmt " || string(data[36:40]) != "data" {
		t.Fatalf("bad WAV header % x", data[:44])
	}
	if rate, bits, ch := le.Uint32(data[24:]), le.Uint16(data[34:]), le.Uint16(data[22:]); rate != 48000 || bits != 16 || ch != 1 {
		t.Fatalf("format %d Hz, %d bits, %d channels; want 48000/16/1", rate, bits, ch)
	}
	n := int(le.Uint32(data[40:])) / 2
	if n != 24000 || len(data) != 44+2*n || int(le.Uint32(data[4:])) != len(data)-8 {
		t.Fatalf("%d samples in %d bytes (RIFF size %d)", n, len(data), le.Uint32(data[4:]))
	}
	samples := make([]float64, n)
	for i := range samples {
		samples[i] = float64(int16(le.Uint16(data[44+2*i:])))
	}
	// Each tone carries half the peak budget; an absent frequency nothing.
	for f, want := range map[float64]float64{400: 0.25 * 32767, 1000: 0.25 * 32767, 700: 0} {
		if got := amplitude(samples, f, 48000); math.Abs(got-want) > 50 {
			t.Errorf("amplitude at %v Hz = %.0f, want %.0f", f, got, want)
		}
	}
}

// amplitude is the single-bin DFT magnitude of x at f, scaled to a sine's peak.
func amplitude(x []float64, f, rate float64) float64 {
	var re, im float64
	for i, v := range x {
		ph := 2 * math.Pi * f * float64(i) / rate
		re += v * math.Cos(ph)
		im -= v * math.Sin(ph)
	}
	return 2 * math.Hypot(re, im) / float64(len(x))
}

func TestRunPattern(t *testing.T) {
	// go test splits -run on "/" and matches each level separately.
	for _, c := range []struct{ name, parent, want string }{
		{"TestEcho", "", `^TestEcho$`},
		{"TestEcho/opus+pcmu_(2)", "", `^TestEcho$/^opus\+pcmu_\(2\)$`},
		{"TestEcho", "Echo/opus", `^TestEcho$/opus`},
		{"TestEcho", "Test.*", `^TestEcho$`},
	} {
		if got := runPattern(c.name, c.parent); got != c.want {
			t.Errorf("runPattern(%q, %q) = %q, want %q", c.name, c.parent, got, c.want)
		}
	}
}
