package signaling

import (
	"testing"
	"time"

	"github.com/hraban/opus"
	"github.com/pion/rtp"

	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
	"github.com/mediarelay/mediarelay/transcode/tone"
)

// sendOpusTone encodes pcm (48 kHz mono) as 20 ms Opus frames and sends
// them from the phone in real time. A second tone carries on the sequence
// numbers of the first (SRTP would drop repeated ones as replays).
func (p *phone) sendOpusTone(t *testing.T, pcm []int16) {
	enc, err := opus.NewEncoder(48000, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for i := 0; i+960 <= len(pcm); i += 960 {
		n, err := enc.Encode(pcm[i:i+960], buf)
		if err != nil {
			t.Fatal(err)
		}
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: p.opusSeq, Timestamp: uint32(p.opusSeq) * 960, SSRC: 77},
			Payload: append([]byte(nil), buf[:n]...)}
		p.opusSeq++
		if err := p.track.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// decodeOpus turns the Opus packets the phone received into 48 kHz PCM.
func decodeOpus(t *testing.T, pkts []*rtp.Packet) []int16 {
	dec, err := opus.NewDecoder(48000, 1)
	if err != nil {
		t.Fatal(err)
	}
	var out []int16
	frame := make([]int16, 5760)
	for _, pkt := range pkts {
		n, err := dec.Decode(pkt.Payload, frame)
		if err != nil {
			continue
		}
		out = append(out, frame[:n]...)
	}
	return out
}

// decodeSIP turns captured SIP-leg RTP into PCM at the codec's rate.
func decodeSIP(t *testing.T, codec string, pkts [][]byte) ([]int16, int) {
	var out []int16
	g722 := transcode.NewG722Decoder()
	for _, b := range pkts {
		var pkt rtp.Packet
		if pkt.Unmarshal(b) != nil || pkt.PayloadType >= 96 {
			continue // RTCP or telephone-event
		}
		switch codec {
		case "PCMU":
			pcm := make([]int16, len(pkt.Payload))
			transcode.MulawDecode(pcm, pkt.Payload)
			out = append(out, pcm...)
		case "PCMA":
			pcm := make([]int16, len(pkt.Payload))
			transcode.AlawDecode(pcm, pkt.Payload)
			out = append(out, pcm...)
		case "G722":
			pcm := make([]int16, 2*len(pkt.Payload))
			n := g722.Decode(pcm, pkt.Payload)
			out = append(out, pcm[:n]...)
		}
	}
	if codec == "G722" {
		return out, 16000
	}
	return out, 8000
}

// TestTranscodedCall sends 400 Hz and 1 kHz as Opus from a WebRTC client
// through the relay to a trunk that speaks only G.711 or G.722 and echoes:
// the trunk must receive the tones in its codec (Opus → SIP codec), and the
// client must hear them back (SIP codec → Opus).
func TestTranscodedCall(t *testing.T) {
	const seconds = 3
	ref := tone.Generate([]float64{400, 1000}, 48000, 48000*seconds, 0.25)
	for _, codec := range []string{"PCMU", "PCMA", "G722"} {
		t.Run(codec, func(t *testing.T) {
			u := newTrunkUAS(t)
			u.setCapture(make(chan []byte, 1000))
			r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, codec))
			p := newPhone(t, "opus")
			p.call(r, "1000")
			p.sendOpusTone(t, ref)
			back := decodeOpus(t, p.collect(time.Second))
			p.hangup()

			var captured [][]byte
			for len(u.capture) > 0 {
				captured = append(captured, <-u.capture)
			}
			atTrunk, rate := decodeSIP(t, codec, captured)
			// Skip the first half second: encoder start-up and path set-up.
			atTrunk = atTrunk[min(len(atTrunk), rate/2):]
			for _, f := range []float64{400, 1000} {
				if !tone.Detect(atTrunk, rate, f) {
					t.Errorf("%v Hz not detected at the trunk (%d samples)", f, len(atTrunk))
				}
				if len(back) < 48000 || !tone.Detect(back[24000:], 48000, f) {
					t.Errorf("%v Hz not detected back at the browser (%d samples)", f, len(back))
				}
			}
			refAtRate := tone.Generate([]float64{400, 1000}, rate, rate, 0.25)
			if snr := tone.SNR(refAtRate, atTrunk[:min(len(atTrunk), 2*rate)]); snr < 10 {
				t.Errorf("Opus → %s SNR %.1f dB, want ≥ 10 dB", codec, snr)
			} else {
				t.Logf("Opus → %s at the trunk: SNR %.1f dB", codec, snr)
			}
			waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
			if got := sumCounter(t, r.m.TranscodedCalls, "mode", mediaplan.ModeTranscode); got != 1 {
				t.Errorf("transcoded calls: %d", got)
			}
		})
	}
}
