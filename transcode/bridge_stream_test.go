package transcode

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mediarelay/mediarelay/transcode/tone"
)

// checkContinuous asserts the relay made no sequence gaps and that
// timestamps advance by exactly step per packet.
func checkContinuous(t *testing.T, what string, out []rtpPacket, step uint32) {
	t.Helper()
	for i := 1; i < len(out); i++ {
		if out[i].Seq != out[i-1].Seq+1 {
			t.Fatalf("%s: seq %d follows %d", what, out[i].Seq, out[i-1].Seq)
		}
		if d := out[i].TS - out[i-1].TS; d != step {
			t.Fatalf("%s: packet %d: timestamp step %d, want %d", what, i, d, step)
		}
		if out[i].SSRC != out[0].SSRC {
			t.Fatalf("%s: SSRC changed", what)
		}
	}
	if len(out) > 0 && !out[0].Marker {
		t.Errorf("%s: first packet has no marker", what)
	}
}

// TestBridgeLoss drops every 10th Opus packet: the SIP side must still get
// one packet per 20 ms with no gaps, the lost frames coming from FEC (the
// packet after a loss is always there) and the tone surviving.
func TestBridgeLoss(t *testing.T) {
	for _, fec := range []bool{true, false} {
		b := newTestBridge(t, "PCMU", 0, func(o *Options) { o.OpusFEC = fec })
		in := opusStream(t, tone.Generate([]float64{1000}, 48000, 48000*2, 0.25), true, 65530, 0xFFFF0000, 1)
		var sent [][]byte
		for i, p := range in {
			if i%10 != 9 {
				sent = append(sent, p)
			}
		}
		out := run(t, b, true, sent)
		checkContinuous(t, "to SIP with loss", out, 160)
		st := b.Stats()
		t.Logf("fec=%v: %d packets out of %d sent, stats %+v", fec, len(out), len(sent), st)
		if len(out) != len(in) {
			// The last packet is a loss (i=99): nothing follows it to reveal
			// it, so it cannot be concealed.
			if len(out) != len(in)-1 {
				t.Errorf("got %d packets, want %d", len(out), len(in)-1)
			}
		}
		if st.LostPackets != 9 || st.PLCFrames+st.FECFrames != 9 {
			t.Errorf("lost %d, PLC %d, FEC %d; want 9 lost, all concealed", st.LostPackets, st.PLCFrames, st.FECFrames)
		}
		if fec && st.FECFrames == 0 || !fec && st.PLCFrames == 0 {
			t.Errorf("fec=%v but FEC %d PLC %d", fec, st.FECFrames, st.PLCFrames)
		}
		if got := decodeSIP("PCMU", out); !tone.Detect(got[800:], 8000, 1000) {
			t.Error("tone lost under 10% loss")
		}
	}

	// The other way: lost G.711 packets leave a timestamp hole (the
	// browser conceals), sequence numbers stay gapless.
	b := newTestBridge(t, "PCMA", 8, nil)
	in := sipStream("PCMA", 8, tone.Generate([]float64{400}, 8000, 16000, 0.25), 20, 100, 0, 2)
	var sent [][]byte
	for i, p := range in {
		if i%10 != 9 {
			sent = append(sent, p)
		}
	}
	out := run(t, b, false, sent)
	for i := 1; i < len(out); i++ {
		if out[i].Seq != out[i-1].Seq+1 {
			t.Fatalf("to WebRTC: seq gap")
		}
		if d := out[i].TS - out[i-1].TS; d != 960 && d != 1920 {
			t.Fatalf("to WebRTC: timestamp step %d", d)
		}
	}
	if st := b.Stats(); st.LostPackets != 9 {
		t.Errorf("to WebRTC lost = %d, want 9", st.LostPackets)
	}
}

// TestBridgeLongGap: a hole longer than maxConceal frames is a
// discontinuity: no PLC beyond the cap, timestamps jump by the elapsed time.
func TestBridgeLongGap(t *testing.T) {
	b := newTestBridge(t, "PCMU", 0, nil)
	in := opusStream(t, tone.Generate([]float64{1000}, 48000, 48000, 0.25), false, 0, 0, 1)
	sent := append(append([][]byte{}, in[:10]...), in[30:]...) // 400 ms missing
	out := run(t, b, true, sent)
	st := b.Stats()
	if st.PLCFrames != 0 || st.Discontinuities != 1 || len(out) != 30 {
		t.Fatalf("packets %d, stats %+v; want 30 packets, 1 discontinuity, no PLC", len(out), st)
	}
	if d := out[10].TS - out[9].TS; d != 21*160 {
		t.Errorf("timestamp jump %d, want %d", d, 21*160)
	}
	if out[10].Seq != out[9].Seq+1 || !out[10].Marker {
		t.Errorf("after the gap: seq %d→%d marker %v", out[9].Seq, out[10].Seq, out[10].Marker)
	}
}

// TestBridgeReorder: packets swapped within the window produce exactly the
// same output as the ordered stream; a packet later than the window is
// dropped and counted.
func TestBridgeReorder(t *testing.T) {
	in := opusStream(t, tone.Generate([]float64{400}, 48000, 48000, 0.25), false, 500, 0, 3)
	ordered := run(t, newTestBridge(t, "PCMU", 0, nil), true, in)

	swapped := append([][]byte{}, in...)
	for i := 5; i+2 < len(swapped); i += 7 {
		swapped[i], swapped[i+2] = swapped[i+2], swapped[i] // two places late
	}
	b := newTestBridge(t, "PCMU", 0, nil)
	got := run(t, b, true, swapped)
	if st := b.Stats(); st.LatePackets != 0 || st.PLCFrames != 0 || st.LostPackets != 0 {
		t.Fatalf("reordered within window: stats %+v", st)
	}
	if len(got) != len(ordered) {
		t.Fatalf("%d packets, ordered run gave %d", len(got), len(ordered))
	}
	for i := range got {
		if string(got[i].Payload) != string(ordered[i].Payload) || got[i].TS-got[0].TS != ordered[i].TS-ordered[0].TS {
			t.Fatalf("packet %d differs from the ordered run", i)
		}
	}

	// Packet 10 arrives after 14: too late, concealed then dropped.
	late := append(append(append([][]byte{}, in[:10]...), in[11:15]...), in[10])
	late = append(late, in[15:]...)
	b = newTestBridge(t, "PCMU", 0, nil)
	got = run(t, b, true, late)
	checkContinuous(t, "late packet", got, 160)
	if st := b.Stats(); st.LatePackets != 1 || st.PLCFrames != 1 {
		t.Errorf("late beyond window: stats %+v", st)
	}

	// A duplicate is dropped as late too.
	dup := append(append([][]byte{}, in[:20]...), in[19], in[20])
	b = newTestBridge(t, "PCMU", 0, nil)
	run(t, b, true, dup)
	if st := b.Stats(); st.LatePackets != 1 {
		t.Errorf("duplicate: stats %+v", st)
	}
}

// TestBridgePtime: 10/30/40 ms out towards SIP, and 10/30 ms in from SIP,
// keep timestamps even and the tone intact.
func TestBridgePtime(t *testing.T) {
	for _, pt := range []int{10, 20, 30, 40} {
		b := newTestBridge(t, "G722", 9, func(o *Options) { o.PtimeMs = pt })
		out := run(t, b, true, opusStream(t, tone.Generate([]float64{1000}, 48000, 48000, 0.25), false, 0, 0, 1))
		checkContinuous(t, "ptime", out, uint32(8*pt))
		if want := 1000 / pt; len(out) != want && len(out) != want-1 {
			t.Errorf("ptime %d: %d packets, want ~%d", pt, len(out), want)
		}
		for _, p := range out {
			if len(p.Payload) != 8*pt {
				t.Fatalf("ptime %d: payload %d bytes, want %d", pt, len(p.Payload), 8*pt)
			}
		}
		got := decodeSIP("G722", out)
		if !tone.Detect(got[1600:], 16000, 1000) {
			t.Errorf("ptime %d: tone lost", pt)
		}

		in := tone.Generate([]float64{400}, 8000, 8000, 0.25)
		b = newTestBridge(t, "PCMU", 0, nil)
		out = run(t, b, false, sipStream("PCMU", 0, in, pt, 0, 0, 2))
		checkContinuous(t, "from SIP ptime", out, 960)
		if len(out) < 48 {
			t.Errorf("from SIP ptime %d: %d Opus packets, want ≥ 48", pt, len(out))
		}
		if g := decodeOpus(t, out, 8000); tone.SNR(in[800:], g[800:]) < 10 {
			t.Errorf("from SIP ptime %d: SNR %.1f", pt, tone.SNR(in[800:], g[800:]))
		}
	}
}

// TestBridgeDTX: silence from SIP with DTX on sends few Opus packets, the
// timestamps stay on the 960 grid and the first packet after silence is
// marked; Opus with DTX gaps from the browser makes the SIP timestamps jump
// by the elapsed time without concealment.
func TestBridgeDTX(t *testing.T) {
	b := newTestBridge(t, "PCMU", 0, func(o *Options) { o.OpusDTX = true })
	speech := tone.Generate([]float64{400}, 8000, 8000, 0.25)
	pcm := append(append(append([]int16{}, speech...), make([]int16, 3*8000)...), speech...)
	out := run(t, b, false, sipStream("PCMU", 0, pcm, 20, 0, 0, 2))
	st := b.Stats()
	t.Logf("DTX: %d frames encoded, %d packets sent", st.ToWebRTCFrames, len(out))
	if st.ToWebRTCFrames != 250 || len(out) > 160 {
		t.Errorf("DTX: %d frames, %d packets; want 250 frames and far fewer packets", st.ToWebRTCFrames, len(out))
	}
	marked := false
	for i := 1; i < len(out); i++ {
		d := out[i].TS - out[i-1].TS
		if out[i].Seq != out[i-1].Seq+1 || d%960 != 0 || d == 0 || d > 250*960 {
			t.Fatalf("DTX: packet %d: seq %d→%d, ts step %d", i, out[i-1].Seq, out[i].Seq, d)
		}
		if d > 960 && out[i].Marker {
			marked = true
		}
	}
	if !marked {
		t.Error("DTX: no marker after a silent period")
	}
	if g := decodeOpus(t, out, 8000); !tone.Detect(g[len(g)-6400:], 8000, 400) {
		t.Error("DTX: tone after silence lost")
	}

	// Browser-side DTX: sequence numbers continue, timestamps jump 1 s.
	in := opusStream(t, tone.Generate([]float64{1000}, 48000, 48000, 0.25), false, 0, 0, 1)
	for i := 25; i < len(in); i++ {
		var p rtpPacket
		_ = parseRTP(in[i], &p)
		in[i] = rtp(111, i == 25, p.Seq, p.TS+48000, 1, p.Payload)
	}
	b = newTestBridge(t, "PCMA", 8, nil)
	out = run(t, b, true, in)
	if st := b.Stats(); st.PLCFrames != 0 || st.LostPackets != 0 {
		t.Errorf("browser DTX concealed: %+v", st)
	}
	if d := out[25].TS - out[24].TS; d != 160+8000 || !out[25].Marker {
		t.Errorf("browser DTX: step %d marker %v, want %d true", d, out[25].Marker, 160+8000)
	}
}

// TestBridgeSSRCChange: a new source mid-call continues the output stream
// (same SSRC, next sequence number, next timestamp).
func TestBridgeSSRCChange(t *testing.T) {
	pcm := tone.Generate([]float64{1000}, 48000, 48000, 0.25)
	a := opusStream(t, pcm[:24000], false, 100, 1000, 1)
	c := opusStream(t, pcm[24000:], false, 40000, 777777, 2)
	b := newTestBridge(t, "PCMU", 0, nil)
	out := run(t, b, true, append(a, c...))
	checkContinuous(t, "SSRC change", out, 160)
	if len(out) != 50 || b.Stats().Discontinuities != 1 {
		t.Errorf("%d packets, stats %+v", len(out), b.Stats())
	}
}

// TestBridgeRoundTripDelay sends a non-periodic signal G.711 → Opus → G.711
// (the WebRTC side echoing) and bounds the added delay by cross-correlation.
// Opus's own look-ahead (SILK 5 ms + resampler) plus the decoder's
// resampler is about 10–20 ms; nothing in the bridge buffers beyond a frame.
func TestBridgeRoundTripDelay(t *testing.T) {
	const maxDelay = 240 // samples at 8 kHz = 30 ms
	r := rand.New(rand.NewPCG(3, 4))
	pcm := make([]int16, 16000)
	var lp float64
	for i := range pcm {
		// A chirp (300 Hz → 3 kHz over 2 s) under a slow envelope, plus a
		// little speech-band noise: no periodicity for the correlation
		// to alias on, and tonal enough for Opus to keep the waveform.
		tt := float64(i) / 8000
		chirp := math.Sin(2 * math.Pi * (300*tt + 675*tt*tt))
		lp = 0.7*lp + 0.3*(r.Float64()*2-1)
		env := 0.6 + 0.4*math.Sin(2*math.Pi*3*tt)
		pcm[i] = int16((0.8*chirp + 0.2*lp) * env * 12000)
	}
	b := newTestBridge(t, "PCMU", 0, func(o *Options) { o.OpusBitrate = 32000 })
	opusOut := run(t, b, false, sipStream("PCMU", 0, pcm, 20, 0, 0, 9))
	echo := make([][]byte, len(opusOut))
	for i, p := range opusOut {
		echo[i] = rtp(111, p.Marker, p.Seq, p.TS, p.SSRC, p.Payload)
	}
	back := decodeSIP("PCMU", run(t, b, true, echo))
	ref := make([]int16, len(pcm))
	MulawDecode(ref, sipStream("PCMU", 0, pcm, 1000, 0, 0, 9)[0][rtpHeaderLen:])
	d := tone.Delay(ref, back, 800)
	corr := tone.Correlation(ref, back, d)
	t.Logf("round trip G.711→Opus→G.711: delay %d samples (%.1f ms), correlation %.2f", d, float64(d)/8, corr)
	if corr < 0.5 {
		t.Errorf("round trip: best correlation %.2f < 0.5; the delay estimate means nothing", corr)
	}
	if d < 0 || d > maxDelay {
		t.Errorf("round-trip delay %d samples, want 0..%d", d, maxDelay)
	}
}
