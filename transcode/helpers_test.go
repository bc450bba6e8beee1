package transcode

import (
	"encoding/binary"
	"io"
	"sync"
	"testing"

	"github.com/hraban/opus"
)

// chanReader is an in-memory leg: packets sent on ch are read one per
// ReadRTP; closing ch ends the stream with io.EOF.
type chanReader struct{ ch chan []byte }

func (r *chanReader) ReadRTP(b []byte) (int, error) {
	p, ok := <-r.ch
	if !ok {
		return 0, io.EOF
	}
	return copy(b, p), nil
}

// collectWriter keeps a copy of every packet written.
type collectWriter struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (w *collectWriter) WriteRTP(b []byte) error {
	w.mu.Lock()
	w.pkts = append(w.pkts, append([]byte(nil), b...))
	w.mu.Unlock()
	return nil
}

// run feeds pkts through one direction of b and returns what came out.
func run(t *testing.T, b *Bridge, toSIP bool, pkts [][]byte) []rtpPacket {
	t.Helper()
	r := &chanReader{ch: make(chan []byte)}
	w := &collectWriter{}
	done := make(chan error, 1)
	go func() {
		if toSIP {
			done <- b.RunToSIP(r, w)
		} else {
			done <- b.RunToWebRTC(r, w)
		}
	}()
	for _, p := range pkts {
		r.ch <- p
	}
	close(r.ch)
	if err := <-done; err == nil {
		t.Fatal("Run returned nil after the reader failed")
	}
	out := make([]rtpPacket, len(w.pkts))
	for i, p := range w.pkts {
		if err := parseRTP(p, &out[i]); err != nil {
			t.Fatalf("bridge wrote a bad RTP packet: %v", err)
		}
	}
	return out
}

func rtp(pt uint8, marker bool, seq uint16, ts, ssrc uint32, payload []byte) []byte {
	b := make([]byte, rtpHeaderLen+len(payload))
	putRTPHeader(b, marker, pt, seq, ts, ssrc)
	copy(b[rtpHeaderLen:], payload)
	return b
}

// opusStream encodes 48 kHz PCM as a browser would (48 kHz, 20 ms frames)
// into RTP packets with PT 111.
func opusStream(t testing.TB, pcm []int16, fec bool, seq0 uint16, ts0, ssrc uint32) [][]byte {
	t.Helper()
	enc, err := opus.NewEncoder(48000, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	if fec {
		if err := enc.SetInBandFEC(true); err != nil {
			t.Fatal(err)
		}
		if err := enc.SetPacketLossPerc(20); err != nil {
			t.Fatal(err)
		}
	}
	var pkts [][]byte
	buf := make([]byte, 1500)
	for i := 0; (i+1)*960 <= len(pcm); i++ {
		n, err := enc.Encode(pcm[i*960:(i+1)*960], buf)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, rtp(111, i == 0, seq0+uint16(i), ts0+uint32(i*960), ssrc, buf[:n]))
	}
	return pkts
}

// sipStream encodes PCM at the codec's rate into RTP packets of ptimeMs.
func sipStream(codec string, pt uint8, pcm []int16, ptimeMs int, seq0 uint16, ts0, ssrc uint32) [][]byte {
	rate := 8000
	var g *G722Encoder
	if codec == "G722" {
		rate, g = 16000, NewG722Encoder()
	}
	per := rate * ptimeMs / 1000
	ticks := 8000 * ptimeMs / 1000
	var pkts [][]byte
	for i := 0; (i+1)*per <= len(pcm); i++ {
		frame := pcm[i*per : (i+1)*per]
		var payload []byte
		switch codec {
		case "PCMU":
			payload = make([]byte, per)
			MulawEncode(payload, frame)
		case "PCMA":
			payload = make([]byte, per)
			AlawEncode(payload, frame)
		case "G722":
			payload = make([]byte, per/2)
			g.Encode(payload, frame)
		}
		pkts = append(pkts, rtp(pt, i == 0, seq0+uint16(i), ts0+uint32(i*ticks), ssrc, payload))
	}
	return pkts
}

// decodeSIP decodes SIP-leg packets in the order written.
func decodeSIP(codec string, pkts []rtpPacket) []int16 {
	var out []int16
	d := NewG722Decoder()
	for _, p := range pkts {
		switch codec {
		case "PCMU":
			s := make([]int16, len(p.Payload))
			MulawDecode(s, p.Payload)
			out = append(out, s...)
		case "PCMA":
			s := make([]int16, len(p.Payload))
			AlawDecode(s, p.Payload)
			out = append(out, s...)
		case "G722":
			s := make([]int16, 2*len(p.Payload))
			d.Decode(s, p.Payload)
			out = append(out, s...)
		}
	}
	return out
}

// decodeOpus decodes WebRTC-leg packets at rate as a browser would, placing
// each at its timestamp (silence for gaps left by DTX).
func decodeOpus(t testing.TB, pkts []rtpPacket, rate int) []int16 {
	t.Helper()
	dec, err := opus.NewDecoder(rate, 1)
	if err != nil {
		t.Fatal(err)
	}
	var out []int16
	buf := make([]int16, rate*120/1000)
	if len(pkts) == 0 {
		return nil
	}
	ts0 := pkts[0].TS
	for _, p := range pkts {
		at := int(p.TS-ts0) / (48000 / rate)
		for len(out) < at {
			out = append(out, 0)
		}
		n, err := dec.Decode(p.Payload, buf)
		if err != nil {
			t.Fatalf("decoding bridge output: %v", err)
		}
		out = append(out[:at], buf[:n]...)
	}
	return out
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
