package transcode

import (
	"encoding/binary"
	"testing"

	"github.com/mediarelay/mediarelay/transcode/tone"
)

func eventPayload(ev uint8, end bool, vol uint8, dur uint16) []byte {
	p := []byte{ev, vol & 0x3F, 0, 0}
	if end {
		p[1] |= 0x80
	}
	binary.BigEndian.PutUint16(p[2:], dur)
	return p
}

// dtmfCall builds: 10 audio packets, one event of 5 updates + 3 end
// retransmissions starting at the 11th packet's timestamp, 10 more audio
// packets after the event. audio is the stream of audio packets (seq and
// ts continuing from seq0/ts0 with tick ticks per packet); evPT, step is
// the event duration step per update in the input clock.
func dtmfCall(audio [][]byte, evPT uint8, step uint16, ssrc uint32) [][]byte {
	var h rtpPacket
	_ = parseRTP(audio[10], &h)
	start, seq := h.TS, h.Seq
	var pkts [][]byte
	pkts = append(pkts, audio[:10]...)
	for i := range 5 {
		pkts = append(pkts, rtp(evPT, i == 0, seq, start, ssrc, eventPayload(5, false, 10, step*uint16(i+1))))
		seq++
	}
	for range 3 {
		pkts = append(pkts, rtp(evPT, false, seq, start, ssrc, eventPayload(5, true, 10, step*6)))
		seq++
	}
	// Audio resumes after the event (its 6 steps), sequence continuing.
	for i := 16; i < 26 && i < len(audio); i++ {
		_ = parseRTP(audio[i], &h)
		pkts = append(pkts, rtp(h.PT, false, seq, h.TS, ssrc, h.Payload))
		seq++
	}
	return pkts
}

func checkDTMF(t *testing.T, out []rtpPacket, pt uint8, wantStep uint16, audioTicks uint32) {
	t.Helper()
	var evs []int
	for i, p := range out {
		if p.PT == pt {
			evs = append(evs, i)
		}
	}
	if len(evs) != 8 {
		t.Fatalf("%d telephone-event packets out, want 8 (5 updates + 3 ends)", len(evs))
	}
	first := out[evs[0]]
	// Consistent with the audio: the event starts where the 11th audio
	// frame would have (10 frames after the first output packet).
	if first.TS != out[0].TS+10*audioTicks {
		t.Errorf("event timestamp %d, want audio start + 10 frames = %d", first.TS, out[0].TS+10*audioTicks)
	}
	if !first.Marker {
		t.Error("first event packet lost its marker")
	}
	ends := 0
	for k, i := range evs {
		var ev telephoneEvent
		p := out[i]
		if err := parseTelephoneEvent(p.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if p.TS != first.TS || ev.Event != 5 || ev.Volume != 10 {
			t.Errorf("event packet %d: ts %d event %d vol %d", k, p.TS, ev.Event, ev.Volume)
		}
		want := wantStep * uint16(min(k+1, 6))
		if ev.Duration != want {
			t.Errorf("event packet %d: duration %d, want %d", k, ev.Duration, want)
		}
		if ev.End {
			ends++
		}
	}
	if ends != 3 {
		t.Errorf("%d end packets, want 3", ends)
	}
	for i := 1; i < len(out); i++ {
		if out[i].Seq != out[i-1].Seq+1 {
			t.Fatalf("seq gap around the event at %d", i)
		}
	}
	// Audio after the event continues at its own elapsed time.
	last := out[evs[7]+1]
	if last.PT == pt || last.TS != first.TS+6*audioTicks {
		t.Errorf("audio after event at ts %d, want %d", last.TS, first.TS+6*audioTicks)
	}
}

func TestBridgeDTMFToSIP(t *testing.T) {
	audio := opusStream(t, tone.Generate([]float64{400}, 48000, 48000, 0.25), false, 60000, 0xFFFFF000, 5)
	b := newTestBridge(t, "PCMU", 0, nil)
	out := run(t, b, true, dtmfCall(audio, 126, 960, 5))
	checkDTMF(t, out, 101, 160, 160)
	if st := b.Stats(); st.DTMFEventsToSIP != 1 || st.LostPackets != 0 || st.PLCFrames != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestBridgeDTMFToWebRTC(t *testing.T) {
	audio := sipStream("PCMA", 8, tone.Generate([]float64{400}, 8000, 8000, 0.25), 20, 65500, 0xFFFFFF00, 6)
	b := newTestBridge(t, "PCMA", 8, nil)
	out := run(t, b, false, dtmfCall(audio, 101, 160, 6))
	checkDTMF(t, out, 126, 960, 960)
	if st := b.Stats(); st.DTMFEventsToWebRTC != 1 || st.LostPackets != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestBridgeDTMFNoPeerPT(t *testing.T) {
	audio := sipStream("PCMU", 0, tone.Generate([]float64{400}, 8000, 8000, 0.25), 20, 1, 1, 6)
	b := newTestBridge(t, "PCMU", 0, func(o *Options) { o.WebRTCDTMFPT = 0 })
	out := run(t, b, false, dtmfCall(audio, 101, 160, 6))
	for _, p := range out {
		if p.PT != 111 {
			t.Fatalf("PT %d sent to a leg without telephone-event", p.PT)
		}
	}
	if st := b.Stats(); st.DTMFDropped != 8 || st.LostPackets != 0 {
		t.Errorf("stats %+v; want 8 DTMF dropped, no loss", st)
	}
}

// TestRescaleEventsClamp: an 8 kHz duration that overflows 16 bits at
// 48 kHz saturates instead of wrapping.
func TestRescaleEventsClamp(t *testing.T) {
	dst := make([]byte, 4)
	if rescaleEvents(dst, eventPayload(1, false, 0, 20000), 6, 1) != 4 || binary.BigEndian.Uint16(dst[2:]) != 0xFFFF {
		t.Errorf("got %x", dst)
	}
	if rescaleEvents(dst, eventPayload(1, true, 0, 6000), 1, 6) != 4 || binary.BigEndian.Uint16(dst[2:]) != 1000 {
		t.Errorf("got %x", dst)
	}
}
