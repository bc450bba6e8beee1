package transcode

import (
	"math"
	"testing"
)

// Reference values from ITU-T G.711 tables (μ-law Table 2a, A-law Table 1a),
// with decoded values on the 16-bit scale the tables use (μ-law decoder
// outputs are the G.711 values ×4, A-law ×8).
func TestG711ReferenceValues(t *testing.T) {
	mu := map[byte]int16{
		0xFF: 0, 0x7F: 0, // ±0
		0xFE: 8, 0x7E: -8, // first step
		0x80: 32124, 0x00: -32124, // 8031×4, the largest magnitude
		0xEF: 132, 0xDF: 396, 0xCF: 924, 0xBF: 1980, 0xAF: 4092, 0x9F: 8316, 0x8F: 16764, // segment starts
	}
	for code, want := range mu {
		var got [1]int16
		MulawDecode(got[:], []byte{code})
		if got[0] != want {
			t.Errorf("μ-law decode %#02x = %d, want %d", code, got[0], want)
		}
	}
	al := map[byte]int16{
		0xD5: 8, 0x55: -8,
		0xAA: 32256, 0x2A: -32256, // 4032×8
		0xC5: 264, 0xF5: 528, 0xE5: 1056, 0x95: 2112, 0x85: 4224, 0xB5: 8448, 0xA5: 16896, // segment starts (33, 66, 132… ×8)
	}
	for code, want := range al {
		var got [1]int16
		AlawDecode(got[:], []byte{code})
		if got[0] != want {
			t.Errorf("A-law decode %#02x = %d, want %d", code, got[0], want)
		}
	}
	enc := []struct {
		in     int16
		mu, al byte
	}{
		{0, 0xFF, 0xD5},
		{-1, 0x7E, 0x55}, // the segment algorithm maps -1 to -8, not to negative zero
		{32767, 0x80, 0xAA},
		{-32768, 0x00, 0x2A},
		{8, 0xFE, 0xD5},
		{1000, 0xCE, 0xFA},
	}
	for _, c := range enc {
		var m, a [1]byte
		MulawEncode(m[:], []int16{c.in})
		AlawEncode(a[:], []int16{c.in})
		if m[0] != c.mu {
			t.Errorf("μ-law encode %d = %#02x, want %#02x", c.in, m[0], c.mu)
		}
		if a[0] != c.al {
			t.Errorf("A-law encode %d = %#02x, want %#02x", c.in, a[0], c.al)
		}
	}
}

// classicUlaw is an independent transcription of the classic segment
// encoder (search over segment end points on the 14-bit magnitude), so the
// tables are checked against something other than the code that built them.
func classicUlaw(pcm int16) byte {
	segEnd := [8]int32{0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF}
	v := int32(pcm) >> 2
	var mask byte
	if v < 0 {
		v, mask = -v, 0x7F
	} else {
		mask = 0xFF
	}
	v = min(v, 8159) + 33
	seg := 0
	for seg < 8 && v > segEnd[seg] {
		seg++
	}
	if seg == 8 {
		return 0x7F ^ mask
	}
	return (byte(seg<<4) | byte(v>>(seg+1))&0xF) ^ mask
}

func classicAlaw(pcm int16) byte {
	segEnd := [8]int32{0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF}
	v := int32(pcm) >> 3
	var mask byte = 0xD5
	if v < 0 {
		v, mask = -v-1, 0x55
	}
	seg := 0
	for seg < 8 && v > segEnd[seg] {
		seg++
	}
	if seg == 8 {
		return 0x7F ^ mask
	}
	q := v >> seg
	if seg < 2 {
		q = v >> 1
	}
	return (byte(seg<<4) | byte(q)&0xF) ^ mask
}

func TestG711TablesMatchSegmentAlgorithm(t *testing.T) {
	pcm := make([]int16, 65536)
	for i := range pcm {
		pcm[i] = int16(i - 32768)
	}
	mu := make([]byte, len(pcm))
	al := make([]byte, len(pcm))
	MulawEncode(mu, pcm)
	AlawEncode(al, pcm)
	for i, s := range pcm {
		if want := classicUlaw(s); mu[i] != want {
			t.Fatalf("μ-law encode %d = %#02x, segment algorithm says %#02x", s, mu[i], want)
		}
		if want := classicAlaw(s); al[i] != want {
			t.Fatalf("A-law encode %d = %#02x, segment algorithm says %#02x", s, al[i], want)
		}
	}
}

// TestG711RoundTrip checks that decode(encode(x)) is monotonic in x, stays
// within half a quantisation step of x, and that encode(decode(c)) == c for
// every code (apart from μ-law's negative zero, 0x7F, which decodes to 0).
func TestG711RoundTrip(t *testing.T) {
	for _, law := range []struct {
		name string
		enc  func([]byte, []int16)
		dec  func([]int16, []byte)
	}{{"μ-law", MulawEncode, MulawDecode}, {"A-law", AlawEncode, AlawDecode}} {
		prev := int16(math.MinInt16)
		var c [1]byte
		var d [1]int16
		for i := -32768; i <= 32767; i++ {
			law.enc(c[:], []int16{int16(i)})
			law.dec(d[:], c[:])
			if d[0] < prev {
				t.Fatalf("%s: decode(encode(%d)) = %d < decode(encode(%d)) = %d", law.name, i, d[0], i-1, prev)
			}
			prev = d[0]
			// The largest step is 1024 (μ-law top segment) on the 16-bit
			// scale; clipping above ±32124/±32256 adds up to ~650.
			if diff := math.Abs(float64(d[0]) - float64(i)); diff > 1024 {
				t.Fatalf("%s: %d decodes back as %d", law.name, i, d[0])
			}
		}
		for code := range 256 {
			law.dec(d[:], []byte{byte(code)})
			law.enc(c[:], d[:])
			if c[0] != byte(code) && !(law.name == "μ-law" && code == 0x7F) {
				t.Errorf("%s: code %#02x → %d → %#02x", law.name, code, d[0], c[0])
			}
		}
	}
}

func TestG711NoAllocs(t *testing.T) {
	pcm := make([]int16, 160)
	b := make([]byte, 160)
	if n := testing.AllocsPerRun(100, func() {
		MulawEncode(b, pcm)
		MulawDecode(pcm, b)
		AlawEncode(b, pcm)
		AlawDecode(pcm, b)
	}); n != 0 {
		t.Errorf("G.711 allocates %v times per frame", n)
	}
}

// TestG711Recode: converting a code to the other law gives what an encoder
// of that law makes of the code's level (checked against the independent
// segment transcriptions), which is one of the two levels of the other law
// either side of it: never a level further away.
func TestG711Recode(t *testing.T) {
	u2a, ok1 := G711Recode("PCMU", "pcma")
	a2u, ok2 := G711Recode("pcma", "PCMU")
	if !ok1 || !ok2 {
		t.Fatal("no μ-law ↔ A-law table")
	}
	for _, pair := range [][2]string{{"PCMU", "PCMU"}, {"PCMU", "G722"}, {"opus", "PCMA"}} {
		if _, ok := G711Recode(pair[0], pair[1]); ok {
			t.Errorf("G711Recode(%s, %s) gave a table", pair[0], pair[1])
		}
	}
	for _, c := range []struct {
		name           string
		tab            *[256]byte
		fromDec, toDec *[256]int16
		classic        func(int16) byte
	}{{"μ→A", u2a, &ulawDec, &alawDec, classicAlaw}, {"A→μ", a2u, &alawDec, &ulawDec, classicUlaw}} {
		for code := range 256 {
			v := c.fromDec[code]
			got := c.tab[code]
			if want := c.classic(v); got != want {
				t.Fatalf("%s: %#02x (level %d) → %#02x, an encoder gives %#02x", c.name, code, v, got, want)
			}
			lvl := int32(c.toDec[got])
			lo, hi := min(lvl, int32(v)), max(lvl, int32(v))
			for other := range 256 {
				if l := int32(c.toDec[other]); l > lo && l < hi {
					t.Fatalf("%s: %#02x (level %d) → level %d, but level %d lies between", c.name, code, v, lvl, l)
				}
			}
		}
	}
	// A tone converted byte by byte is as good as one encoded in A-law
	// from the start, give or take one requantisation.
	pcm := make([]int16, 8000)
	for i := range pcm {
		pcm[i] = int16(8000 * math.Sin(2*math.Pi*1000*float64(i)/8000+0.3))
	}
	mu := make([]byte, len(pcm))
	MulawEncode(mu, pcm)
	for i, b := range mu {
		mu[i] = u2a[b]
	}
	back := make([]int16, len(pcm))
	AlawDecode(back, mu)
	var sig, noise float64
	for i := range pcm {
		sig += float64(pcm[i]) * float64(pcm[i])
		d := float64(pcm[i]) - float64(back[i])
		noise += d * d
	}
	if snr := 10 * math.Log10(sig/noise); snr < 30 {
		t.Errorf("μ-law tone converted to A-law: SNR %.1f dB, want ≥ 30", snr)
	}
}
