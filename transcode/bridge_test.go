package transcode

import (
	"fmt"
	"testing"

	"github.com/mediarelay/mediarelay/transcode/tone"
)

var sipCodecs = []struct {
	name string
	pt   uint8
	rate int
}{{"PCMU", 0, 8000}, {"PCMA", 8, 8000}, {"G722", 9, 16000}}

func newTestBridge(t testing.TB, codec string, pt uint8, mod func(*Options)) *Bridge {
	t.Helper()
	o := Options{OpusPT: 111, WebRTCDTMFPT: 126, SIPCodec: codec, SIPPT: pt, SIPDTMFPT: 101, OpusComplexity: 5}
	if mod != nil {
		mod(&o)
	}
	b, err := NewBridge(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Minimum SNR (dB) of a -12 dBFS tone after 100 ms of settling, measured
// against a fresh copy of the tone. Opus is not waveform-exact, so these
// are far below G.711's ~38 dB; they still fail on any timing, gain or
// resampling error (which gives ≤ 0 dB). Measured at the time of writing:
// to SIP 17.6–25.5 dB, to WebRTC 14.4–23.6 dB (G.722 highest).
var minToneSNR = map[string]struct{ toSIP, toWebRTC float64 }{
	"PCMU": {12, 10},
	"PCMA": {12, 10},
	"G722": {12, 10},
}

func TestBridgeTonesBothWays(t *testing.T) {
	for _, c := range sipCodecs {
		for _, f := range []float64{400, 1000} {
			other := 1400 - f // the tone that must not be found
			t.Run(fmt.Sprintf("%s/%vHz", c.name, f), func(t *testing.T) {
				b := newTestBridge(t, c.name, c.pt, nil)
				settle := c.rate / 10

				in48 := tone.Generate([]float64{f}, 48000, 48000, 0.25)
				out := run(t, b, true, opusStream(t, in48, false, 1000, 5000, 0xA))
				got := decodeSIP(c.name, out)
				ref := tone.Generate([]float64{f}, c.rate, len(got), 0.25)
				snr := tone.SNR(ref[settle:], got[settle:])
				t.Logf("to SIP: %d packets, SNR %.1f dB", len(out), snr)
				if !tone.Detect(got[settle:], c.rate, f) || tone.Detect(got[settle:], c.rate, other) {
					t.Errorf("to SIP: tone %v Hz not cleanly detected", f)
				}
				if snr < minToneSNR[c.name].toSIP {
					t.Errorf("to SIP: SNR %.1f dB < %.0f", snr, minToneSNR[c.name].toSIP)
				}

				in := tone.Generate([]float64{f}, c.rate, c.rate, 0.25)
				out = run(t, b, false, sipStream(c.name, c.pt, in, 20, 7, 99, 0xB))
				got = decodeOpus(t, out, c.rate)
				snr = tone.SNR(in[settle:], got[settle:])
				t.Logf("to WebRTC: %d packets, SNR %.1f dB", len(out), snr)
				if !tone.Detect(got[settle:], c.rate, f) || tone.Detect(got[settle:], c.rate, other) {
					t.Errorf("to WebRTC: tone %v Hz not cleanly detected", f)
				}
				if snr < minToneSNR[c.name].toWebRTC {
					t.Errorf("to WebRTC: SNR %.1f dB < %.0f", snr, minToneSNR[c.name].toWebRTC)
				}
				st := b.Stats()
				if st.ToSIPFrames != 50 || st.ToWebRTCFrames != 50 || st.PLCFrames != 0 || st.DroppedPackets != 0 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}
