package transcode

import (
	"testing"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/transcode/tone"
)

// switchRun feeds pkts through a media.Path that starts on first's stage
// and switches to second's around packet at; it returns what came out.
func switchRun(t *testing.T, toSIP bool, first, second *Bridge, pkts [][]byte, at int) []rtpPacket {
	t.Helper()
	w := &collectWriter{}
	stage := func(b *Bridge) media.Stage {
		if toSIP {
			return b.ToSIPStage(w)
		}
		return b.ToWebRTCStage(w)
	}
	p := media.NewPath(stage(first))
	r := &chanReader{ch: make(chan []byte)}
	done := make(chan error, 1)
	go func() { done <- p.Run(r) }()
	for i, pkt := range pkts {
		if i == at {
			// The path has taken packet at-1 (the channel is unbuffered),
			// so the switch lands before packet at-1 or at.
			p.Switch(stage(second))
		}
		r.ch <- pkt
	}
	close(r.ch)
	<-done
	out := make([]rtpPacket, len(w.pkts))
	for i, b := range w.pkts {
		if err := parseRTP(b, &out[i]); err != nil {
			t.Fatalf("bad RTP out: %v", err)
		}
	}
	return out
}

// TestBridgeStageSwitch: a call's SIP leg moves from PCMU to another codec
// mid-stream. Towards the SIP leg, the new bridge's packets carry on the
// old stream (SSRC, sequence, 20 ms timestamp steps) in the new payload
// type and codec; towards the browser, the Opus stream goes on just as
// seamlessly while its input changed codec. The tones survive both ways.
func TestBridgeStageSwitch(t *testing.T) {
	for _, to := range []struct {
		name string
		pt   uint8
		rate int
	}{{"PCMA", 8, 8000}, {"G722", 9, 16000}} {
		t.Run(to.name, func(t *testing.T) {
			// Browser → trunk: 2 s of Opus, the switch after 1 s.
			opusIn := opusStream(t, tone.Generate([]float64{400, 1000}, 48000, 2*48000, 0.25), false, 100, 5000, 0xabc)
			first := newTestBridge(t, "PCMU", 0, nil)
			second, err := first.Successor(Options{OpusPT: 111, WebRTCDTMFPT: 126, SIPCodec: to.name, SIPPT: to.pt, SIPDTMFPT: 101})
			if err != nil {
				t.Fatal(err)
			}
			out := switchRun(t, true, first, second, opusIn, 50)
			checkSeamless(t, "to SIP", out, 160)
			if st := second.Stats(); st.ToSIPPackets != uint64(len(out)) || st.ToSIPFrames != uint64(len(opusIn)) {
				t.Errorf("the successor counts %d packets out of %d and %d frames of %d: not the call's", st.ToSIPPackets, len(out), st.ToSIPFrames, len(opusIn))
			}
			var before, after []rtpPacket
			for _, p := range out {
				switch p.PT {
				case 0:
					before = append(before, p)
				case to.pt:
					after = append(after, p)
				default:
					t.Fatalf("to SIP: payload type %d", p.PT)
				}
			}
			if len(before) < 45 || len(after) < 45 || out[len(before)].PT != to.pt {
				t.Fatalf("to SIP: %d PCMU packets then %d %s", len(before), len(after), to.name)
			}
			if pcm := decodeSIP(to.name, after); !tone.Detect(pcm[to.rate/10:], to.rate, 400) || !tone.Detect(pcm[to.rate/10:], to.rate, 1000) {
				t.Errorf("to SIP: the tones did not survive the switch to %s", to.name)
			}

			// Trunk → browser: the trunk's stream goes on (same SSRC and
			// numbering) in the new codec.
			pcm8 := tone.Generate([]float64{400, 1000}, 8000, 8000, 0.25)
			pcmTo := tone.Generate([]float64{400, 1000}, to.rate, to.rate, 0.25)
			sipIn := append(sipStream("PCMU", 0, pcm8, 20, 7, 0, 0x55), sipStream(to.name, to.pt, pcmTo, 20, 57, 8000, 0x55)...)
			out = switchRun(t, false, newTestBridge(t, "PCMU", 0, nil), newTestBridge(t, to.name, to.pt, nil), sipIn, 50)
			checkSeamless(t, "to WebRTC", out, 960)
			if len(out) < 95 {
				t.Fatalf("to WebRTC: %d packets for 100 in", len(out))
			}
			if pcm := decodeOpus(t, out[55:], 48000); !tone.Detect(pcm, 48000, 400) || !tone.Detect(pcm, 48000, 1000) {
				t.Errorf("to WebRTC: the tones did not survive the switch from PCMU to %s", to.name)
			}
		})
	}
}

// checkSeamless asserts one stream: one SSRC, no sequence gap, timestamps
// step apart.
func checkSeamless(t *testing.T, what string, out []rtpPacket, step uint32) {
	t.Helper()
	for i := 1; i < len(out); i++ {
		if out[i].SSRC != out[0].SSRC || out[i].Seq != out[i-1].Seq+1 || out[i].TS-out[i-1].TS != step {
			t.Fatalf("%s: packet %d (SSRC %#x seq %d ts %d) does not follow packet %d (SSRC %#x seq %d ts %d)",
				what, i, out[i].SSRC, out[i].Seq, out[i].TS, i-1, out[0].SSRC, out[i-1].Seq, out[i-1].TS)
		}
	}
}
