package transcode

import "strings"

// G.711 (ITU-T G.711, 1988) companding by table lookup.
//
// The tables are filled at init from the classic segment algorithm (the one
// in the ITU reference and in Sun's g711.c) so that the hot path is a single
// indexed load per sample. μ-law only looks at the top 14 bits of a sample
// and A-law at the top 13, so the encode tables are indexed by those bits
// (16384 and 8192 entries) and reproduce the segment algorithm exactly for
// all 65536 inputs.

var (
	ulawEnc [1 << 14]byte
	ulawDec [256]int16
	alawEnc [1 << 13]byte
	alawDec [256]int16
)

func init() {
	for i := range ulawEnc {
		// i is the top 14 bits of a 16-bit sample, as an unsigned index;
		// shifting back up restores the sign.
		ulawEnc[i] = ulawEncodeSegment(int16(uint16(i) << 2))
	}
	for i := range alawEnc {
		alawEnc[i] = alawEncodeSegment(int16(uint16(i) << 3))
	}
	for i := range 256 {
		ulawDec[i] = ulawDecodeSegment(byte(i))
		alawDec[i] = alawDecodeSegment(byte(i))
	}
}

// ulawEncodeSegment is the reference μ-law encoder (segment search); it
// fills the table and is what the tests compare the table against.
func ulawEncodeSegment(sample int16) byte {
	const (
		bias = 0x84 >> 2 // 33 on the 14-bit scale
		clip = 8159
	)
	v := int32(sample) >> 2
	mask := byte(0xFF)
	if v < 0 {
		v = -v
		mask = 0x7F
	}
	if v > clip {
		v = clip
	}
	v += bias
	seg := 0
	for t := v >> 6; t != 0; t >>= 1 {
		seg++
	}
	if seg >= 8 {
		// Only clip+bias = 8192 lands here: the largest code.
		return 0x7F ^ mask
	}
	u := byte(seg<<4) | byte((v>>(seg+1))&0x0F)
	return u ^ mask
}

// ulawDecodeSegment is the reference μ-law decoder.
func ulawDecodeSegment(u byte) int16 {
	const bias = 0x84
	u = ^u
	t := (int32(u&0x0F) << 3) + bias
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(bias - t)
	}
	return int16(t - bias)
}

// alawEncodeSegment is the reference A-law encoder (segment search).
func alawEncodeSegment(sample int16) byte {
	v := int32(sample) >> 3
	mask := byte(0xD5)
	if v < 0 {
		mask = 0x55
		v = -v - 1
	}
	seg := 0
	for t := v >> 5; t != 0; t >>= 1 {
		seg++
	}
	if seg >= 8 {
		return 0x7F ^ mask
	}
	a := byte(seg << 4)
	if seg < 2 {
		a |= byte((v >> 1) & 0x0F)
	} else {
		a |= byte((v >> seg) & 0x0F)
	}
	return a ^ mask
}

// alawDecodeSegment is the reference A-law decoder.
func alawDecodeSegment(a byte) int16 {
	a ^= 0x55
	t := int32(a&0x0F) << 4
	switch seg := (a & 0x70) >> 4; seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

// MulawEncode encodes pcm into dst as G.711 μ-law, one byte per sample.
// It encodes min(len(dst), len(pcm)) samples and does not allocate.
func MulawEncode(dst []byte, pcm []int16) {
	n := min(len(dst), len(pcm))
	dst, pcm = dst[:n], pcm[:n]
	for i, s := range pcm {
		dst[i] = ulawEnc[uint16(s)>>2]
	}
}

// MulawDecode decodes G.711 μ-law bytes from src into dst.
// It decodes min(len(dst), len(src)) samples and does not allocate.
func MulawDecode(dst []int16, src []byte) {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, b := range src {
		dst[i] = ulawDec[b]
	}
}

// AlawEncode encodes pcm into dst as G.711 A-law, one byte per sample.
// It encodes min(len(dst), len(pcm)) samples and does not allocate.
func AlawEncode(dst []byte, pcm []int16) {
	n := min(len(dst), len(pcm))
	dst, pcm = dst[:n], pcm[:n]
	for i, s := range pcm {
		dst[i] = alawEnc[uint16(s)>>3]
	}
}

// AlawDecode decodes G.711 A-law bytes from src into dst.
// It decodes min(len(dst), len(src)) samples and does not allocate.
func AlawDecode(dst []int16, src []byte) {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, b := range src {
		dst[i] = alawDec[b]
	}
}

// G.711 μ-law ↔ A-law conversion, byte for byte. A call whose legs both
// speak G.711 but in different laws (a browser on PCMU, a trunk that moved
// to PCMA) needs no decoder: each code maps to the code of the other law
// whose interval holds its reconstruction level, one table load per sample.
var (
	ulawToAlaw [256]byte
	alawToUlaw [256]byte
)

func init() {
	for i := range 256 {
		ulawToAlaw[i] = alawEnc[uint16(ulawDec[i])>>3]
		alawToUlaw[i] = ulawEnc[uint16(alawDec[i])>>2]
	}
}

// G711Recode returns the table that converts G.711 bytes of codec from into
// codec to ("PCMU" or "PCMA", any case), for MulawToAlaw-style conversion
// in place; ok is false unless from and to are the two different laws.
// The table is a copy: the caller may keep it.
func G711Recode(from, to string) (tab *[256]byte, ok bool) {
	switch {
	case strings.EqualFold(from, "PCMU") && strings.EqualFold(to, "PCMA"):
		t := ulawToAlaw
		return &t, true
	case strings.EqualFold(from, "PCMA") && strings.EqualFold(to, "PCMU"):
		t := alawToUlaw
		return &t, true
	}
	return nil, false
}
