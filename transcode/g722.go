package transcode

// G.722 (ITU-T G.722, 64 kbit/s mode 1): 16 kHz audio split by a 24-tap QMF
// into two 8 kHz sub-bands, the lower coded with 6-bit ADPCM and the upper
// with 2-bit ADPCM, one byte per pair of input samples. The arithmetic
// follows the Recommendation's fixed-point blocks bit for bit so that the
// stream interoperates with other implementations; names in comments
// (QUANTL, LOGSCL, UPPOL2, …) are the Recommendation's block names.
//
// On the wire (RFC 3551 §4.5.2) G.722 uses an 8000 Hz RTP clock even though
// it samples at 16 kHz, so one RTP tick is two samples and one byte.

// Tables of the Recommendation (Tables 6–17 of G.722).
var (
	// qmfCoef holds half of the symmetric 24-tap QMF (h0..h11).
	qmfCoef = [12]int32{3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11}

	// q6 are the lower-band quantiser decision levels (QUANTL), 30 used.
	q6 = [32]int32{
		0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714,
		786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
	}
	// iln and ilp map a decision interval to the 6-bit code for negative
	// and positive differences.
	iln = [32]int32{
		0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
		18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 0,
	}
	ilp = [32]int32{
		0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47,
		46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 0,
	}
	// qm6 is the 6-bit lower-band inverse quantiser (decoder output).
	qm6 = [64]int32{
		-136, -136, -136, -136, -24808, -21904, -19008, -16704,
		-14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
		-7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
		-3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
		24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
		10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
		4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
		1688, 1360, 1040, 728, 432, 136, -432, -136,
	}
	// qm4 is the 4-bit lower-band inverse quantiser that drives prediction
	// and adaptation in both encoder and decoder (so they stay in step
	// whatever the bit rate mode).
	qm4 = [16]int32{
		0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
		20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
	}
	// wl and rl42: lower-band log scale factor multipliers (LOGSCL).
	wl   = [8]int32{-60, -30, 58, 172, 334, 538, 1198, 3042}
	rl42 = [16]int32{0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0}
	// ilb is the log-to-linear table of SCALEL/SCALEH.
	ilb = [32]int32{
		2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
		2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
	}
	// Upper band: code maps (QUANTH), inverse quantiser, log multipliers.
	ihn = [3]int32{0, 1, 0}
	ihp = [3]int32{0, 3, 2}
	qm2 = [4]int32{-7408, -1616, 7408, 1616}
	wh  = [3]int32{0, -214, 798}
	rh2 = [4]int32{2, 1, 2, 1}
)

func sat16(v int32) int32 {
	if v > 32767 {
		return 32767
	}
	if v < -32768 {
		return -32768
	}
	return v
}

// adpcmBand is the state of one sub-band's adaptive predictor and quantiser
// scale factor. Index 0 of the delay lines is the current sample.
type adpcmBand struct {
	s   int32    // predicted signal
	sp  int32    // pole-section prediction
	sz  int32    // zero-section prediction
	r   [3]int32 // reconstructed signal
	a   [3]int32 // pole coefficients
	p   [3]int32 // partial reconstructed signal
	d   [7]int32 // quantised difference
	b   [7]int32 // zero coefficients
	nb  int32    // log scale factor
	det int32    // linear scale factor (quantiser step)
}

func (b *adpcmBand) reset(det int32) {
	*b = adpcmBand{det: det}
}

// scale runs LOGSCL/LOGSCH then SCALEL/SCALEH: the log scale factor leaks
// towards zero (×127/128), moves by the code's multiplier, is clamped, and
// is converted back to a linear step. limit and shiftBase differ between
// the bands (18432/8 for the lower, 22528/10 for the upper).
func (b *adpcmBand) scale(mult, limit, shiftBase int32) {
	nb := (b.nb*127)>>7 + mult
	nb = max(0, min(nb, limit))
	b.nb = nb
	frac := (nb >> 6) & 31
	sh := shiftBase - nb>>11
	var v int32
	if sh < 0 {
		v = ilb[frac] << -sh
	} else {
		v = ilb[frac] >> sh
	}
	b.det = v << 2
}

// adapt runs the predictor update (RECONS, PARREC, UPPOL2, UPPOL1, UPZERO,
// DELAYA, FILTEP, FILTEZ, PREDIC) with the quantised difference dq, leaving
// the prediction for the next sample in b.s.
func (b *adpcmBand) adapt(dq int32) {
	b.d[0] = dq
	b.r[0] = sat16(b.s + dq)
	b.p[0] = sat16(b.sz + dq)

	// UPPOL2: second pole coefficient, sign-correlation driven.
	sg0, sg1, sg2 := b.p[0]>>15, b.p[1]>>15, b.p[2]>>15
	w1 := sat16(b.a[1] << 2)
	w2 := w1
	if sg0 == sg1 {
		w2 = -w1
	}
	w2 = min(w2, 32767)
	w3 := w2 >> 7
	if sg0 == sg2 {
		w3 += 128
	} else {
		w3 -= 128
	}
	w3 += (b.a[2] * 32512) >> 15
	a2 := max(-12288, min(w3, 12288))

	// UPPOL1: first pole coefficient, kept inside the stability triangle.
	w1 = -192
	if sg0 == sg1 {
		w1 = 192
	}
	a1 := sat16(w1 + (b.a[1]*32640)>>15)
	lim := sat16(15360 - a2)
	a1 = max(-lim, min(a1, lim))

	// UPZERO: six zero coefficients, sign-sign LMS with leakage.
	var bp [7]int32
	step := int32(128)
	if dq == 0 {
		step = 0
	}
	sgd := dq >> 15
	for i := 1; i < 7; i++ {
		w := -step
		if b.d[i]>>15 == sgd {
			w = step
		}
		bp[i] = sat16(w + (b.b[i]*32640)>>15)
	}

	// DELAYA: shift the delay lines, commit the new coefficients.
	for i := 6; i > 0; i-- {
		b.d[i] = b.d[i-1]
		b.b[i] = bp[i]
	}
	b.r[2], b.r[1] = b.r[1], b.r[0]
	b.p[2], b.p[1] = b.p[1], b.p[0]
	b.a[2], b.a[1] = a2, a1

	// FILTEP, FILTEZ, PREDIC.
	b.sp = sat16((b.a[1]*sat16(b.r[1]+b.r[1]))>>15 + (b.a[2]*sat16(b.r[2]+b.r[2]))>>15)
	var sz int32
	for i := 6; i > 0; i-- {
		sz += (b.b[i] * sat16(b.d[i]+b.d[i])) >> 15
	}
	b.sz = sat16(sz)
	b.s = sat16(b.sp + b.sz)
}

// G722Encoder encodes 16 kHz 16-bit PCM to G.722 at 64 kbit/s. The zero
// value is not ready; use NewG722Encoder or Reset. It holds state between
// calls, so use one per stream.
type G722Encoder struct {
	x         [24]int32 // QMF history
	low, high adpcmBand
	havePend  bool  // an odd sample is waiting for its pair
	pend      int16 // that sample
}

// NewG722Encoder returns an encoder in the Recommendation's reset state.
func NewG722Encoder() *G722Encoder {
	e := &G722Encoder{}
	e.Reset()
	return e
}

// Reset returns the encoder to its initial state.
func (e *G722Encoder) Reset() {
	*e = G722Encoder{}
	e.low.reset(32)
	e.high.reset(8)
}

// Encode encodes pcm (16 kHz) into dst, one byte per two samples, and
// returns the number of bytes written. An odd trailing sample is kept for
// the next call, so pcm can be split anywhere. dst needs room for
// (len(pcm)+1)/2 bytes; Encode stops early if it has less. It does not
// allocate.
func (e *G722Encoder) Encode(dst []byte, pcm []int16) int {
	n := 0
	for len(pcm) > 0 && n < len(dst) {
		var s0, s1 int16
		if e.havePend {
			s0, s1 = e.pend, pcm[0]
			pcm = pcm[1:]
			e.havePend = false
		} else if len(pcm) >= 2 {
			s0, s1 = pcm[0], pcm[1]
			pcm = pcm[2:]
		} else {
			e.pend, e.havePend = pcm[0], true
			break
		}
		dst[n] = e.encodePair(s0, s1)
		n++
	}
	return n
}

// quantL returns the decision interval (1–30) of the magnitude mag for the
// scale factor det: the first i with mag < q6[i]·det/4096, or 30. The
// levels grow with i, so a binary search finds the same interval as the
// Recommendation's linear scan in 5 steps instead of up to 29.
func quantL(mag, det int32) int {
	lo, hi := 1, 30
	for lo < hi {
		mid := (lo + hi) / 2
		if mag < (q6[mid]*det)>>12 {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func (e *G722Encoder) encodePair(s0, s1 int16) byte {
	// Transmit QMF: two new samples in, one low and one high band sample out.
	copy(e.x[:22], e.x[2:])
	e.x[22], e.x[23] = int32(s0), int32(s1)
	var even, odd int32
	for i := range 12 {
		odd += e.x[2*i] * qmfCoef[i]
		even += e.x[2*i+1] * qmfCoef[11-i]
	}
	xl := (even + odd) >> 14
	xh := (even - odd) >> 14

	// Lower band. SUBTRA, QUANTL: find the decision interval of |el|.
	lb := &e.low
	el := sat16(xl - lb.s)
	mag := el
	if el < 0 {
		mag = -(el + 1)
	}
	i := quantL(mag, lb.det)
	il := ilp[i]
	if el < 0 {
		il = iln[i]
	}
	// INVQAL uses only the top 4 bits, as the decoder does.
	ril := il >> 2
	dl := (lb.det * qm4[ril]) >> 15
	lb.scale(wl[rl42[ril]], 18432, 8)
	lb.adapt(dl)

	// Upper band. SUBTRA, QUANTH (2 bits), INVQAH, LOGSCH, SCALEH.
	hb := &e.high
	eh := sat16(xh - hb.s)
	mag = eh
	if eh < 0 {
		mag = -(eh + 1)
	}
	mih := int32(1)
	if mag >= (564*hb.det)>>12 {
		mih = 2
	}
	ih := ihp[mih]
	if eh < 0 {
		ih = ihn[mih]
	}
	dh := (hb.det * qm2[ih]) >> 15
	hb.scale(wh[rh2[ih]], 22528, 10)
	hb.adapt(dh)

	return byte(ih<<6 | il)
}

// G722Decoder decodes G.722 at 64 kbit/s to 16 kHz 16-bit PCM. Use
// NewG722Decoder or Reset before the first Decode; use one per stream.
type G722Decoder struct {
	x         [24]int32 // QMF history
	low, high adpcmBand
}

// NewG722Decoder returns a decoder in the Recommendation's reset state.
func NewG722Decoder() *G722Decoder {
	d := &G722Decoder{}
	d.Reset()
	return d
}

// Reset returns the decoder to its initial state.
func (d *G722Decoder) Reset() {
	*d = G722Decoder{}
	d.low.reset(32)
	d.high.reset(8)
}

// Decode decodes src into dst, two samples per byte, and returns the number
// of samples written. It stops early if dst is short (a whole byte needs two
// slots) and does not allocate.
func (d *G722Decoder) Decode(dst []int16, src []byte) int {
	n := 0
	for _, code := range src {
		if n+2 > len(dst) {
			break
		}
		dst[n], dst[n+1] = d.decodeByte(code)
		n += 2
	}
	return n
}

func (d *G722Decoder) decodeByte(code byte) (int16, int16) {
	il := int32(code & 0x3F)
	ih := int32(code >> 6)

	// Lower band: INVQBL with all 6 bits for the output, INVQAL with the
	// top 4 for adaptation (so the predictor matches the encoder's).
	lb := &d.low
	rl := lb.s + (lb.det*qm6[il])>>15
	rl = max(-16384, min(rl, 16383))
	ril := il >> 2
	dl := (lb.det * qm4[ril]) >> 15
	lb.scale(wl[rl42[ril]], 18432, 8)
	lb.adapt(dl)

	// Upper band.
	hb := &d.high
	dh := (hb.det * qm2[ih]) >> 15
	rh := dh + hb.s
	rh = max(-16384, min(rh, 16383))
	hb.scale(wh[rh2[ih]], 22528, 10)
	hb.adapt(dh)

	// Receive QMF: one low and one high sample in, two 16 kHz samples out.
	copy(d.x[:22], d.x[2:])
	d.x[22], d.x[23] = rl+rh, rl-rh
	var o1, o2 int32
	for i := range 12 {
		o2 += d.x[2*i] * qmfCoef[i]
		o1 += d.x[2*i+1] * qmfCoef[11-i]
	}
	return int16(sat16(o1 >> 11)), int16(sat16(o2 >> 11))
}
