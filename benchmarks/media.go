package benchmarks

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/hraban/opus"
)

// Codec is the audio the load client sends.
type Codec struct {
	Name        string // "PCMU" or "opus" as in SDP rtpmap
	PayloadType uint8
	ClockRate   int
	Channels    int
	TSPerFrame  uint32 // RTP timestamp increment per 20 ms frame
}

var (
	// CodecPCMU is G.711 μ-law, static payload type 0.
	CodecPCMU = Codec{Name: "PCMU", PayloadType: 0, ClockRate: 8000, Channels: 1, TSPerFrame: 160}
	// CodecOpus is Opus with the payload type browsers use.
	CodecOpus = Codec{Name: "opus", PayloadType: 111, ClockRate: 48000, Channels: 2, TSPerFrame: 960}
)

// ParseCodec maps a flag value to a Codec.
func ParseCodec(s string) (Codec, error) {
	switch s {
	case "pcmu", "PCMU":
		return CodecPCMU, nil
	case "opus", "OPUS", "Opus":
		return CodecOpus, nil
	}
	return Codec{}, fmt.Errorf("unknown codec %q (want pcmu or opus)", s)
}

// frameCount frames (one second) are encoded once and sent in a loop, so the
// load client spends no CPU on encoding while it runs.
const frameCount = 50

// The delay marker rides in the last markerLen bytes of every payload:
// magic, the client's send time, and the µs the trunk UAS held it before
// echoing. In PCMU passthrough the payload comes back byte for byte, so
// the marker survives; in Opus it sits in the packet's padding (RFC 6716
// §3.2.5), which decoders ignore. Transcoding destroys it by design.
const markerLen = 16

var markerMagic = [4]byte{'M', 'R', 'B', '1'}

// epoch is the origin of marker timestamps; time.Since uses the monotonic clock.
var epoch = time.Now()

func nowNs() int64 { return int64(time.Since(epoch)) }

// stampMarker writes the send time into the marker at the end of payload.
func stampMarker(payload []byte, sendNs int64) {
	m := payload[len(payload)-markerLen:]
	copy(m, markerMagic[:])
	binary.BigEndian.PutUint64(m[4:], uint64(sendNs))
	binary.BigEndian.PutUint32(m[12:], 0)
}

// readMarker returns the send time and echo hold (µs) if payload carries a marker.
func readMarker(payload []byte) (sendNs int64, holdUs uint32, ok bool) {
	if len(payload) < markerLen {
		return 0, 0, false
	}
	m := payload[len(payload)-markerLen:]
	if m[0] != markerMagic[0] || m[1] != markerMagic[1] || m[2] != markerMagic[2] || m[3] != markerMagic[3] {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(m[4:])), binary.BigEndian.Uint32(m[12:]), true
}

// setMarkerHold records, in an echoed payload, how long the UAS held it.
func setMarkerHold(payload []byte, holdUs uint32) {
	binary.BigEndian.PutUint32(payload[len(payload)-markerLen+12:], holdUs)
}

// Frames returns one second of a 440 Hz tone encoded in c, 20 ms per frame,
// each with room for the marker at its end.
func Frames(c Codec) ([][]byte, error) {
	switch c.Name {
	case "PCMU":
		frames := make([][]byte, frameCount)
		n := 0
		for i := range frames {
			f := make([]byte, 160)
			for j := range f {
				s := 0.3 * math.Sin(2*math.Pi*440*float64(n)/8000)
				f[j] = linearToULaw(int16(s * 32767))
				n++
			}
			frames[i] = f
		}
		return frames, nil
	case "opus":
		enc, err := opus.NewEncoder(48000, 2, opus.AppVoIP)
		if err != nil {
			return nil, fmt.Errorf("opus encoder: %w", err)
		}
		if err := enc.SetBitrate(32000); err != nil {
			return nil, fmt.Errorf("opus bitrate: %w", err)
		}
		pcm := make([]int16, 960*2)
		buf := make([]byte, 1500)
		frames := make([][]byte, frameCount)
		n := 0
		for i := range frames {
			for j := 0; j < 960; j++ {
				s := int16(0.3 * 32767 * math.Sin(2*math.Pi*440*float64(n)/48000))
				pcm[2*j], pcm[2*j+1] = s, s
				n++
			}
			l, err := enc.Encode(pcm, buf)
			if err != nil {
				return nil, fmt.Errorf("opus encode: %w", err)
			}
			p, err := opusWithPadding(buf[:l], markerLen)
			if err != nil {
				return nil, err
			}
			frames[i] = p
		}
		return frames, nil
	}
	return nil, fmt.Errorf("no frames for codec %q", c.Name)
}

// opusWithPadding rewrites a single-frame (code 0) Opus packet as a code 3
// packet carrying pad bytes of padding at its end, where the marker goes.
func opusWithPadding(pkt []byte, pad int) ([]byte, error) {
	if len(pkt) < 1 || pkt[0]&0x03 != 0 {
		return nil, fmt.Errorf("opus packet is not code 0 (toc %#x)", pkt[0])
	}
	if pad > 254 {
		return nil, fmt.Errorf("padding %d too long", pad)
	}
	out := make([]byte, 0, len(pkt)+3+pad)
	out = append(out, pkt[0]|0x03, 0x40|1, byte(pad)) // code 3; padding flag, CBR, M=1
	out = append(out, pkt[1:]...)
	return append(out, make([]byte, pad)...), nil
}

// linearToULaw is G.711 μ-law encoding of one 16-bit sample.
func linearToULaw(s int16) byte {
	const bias, clip = 0x84, 32635
	sign := byte(0)
	v := int(s)
	if v < 0 {
		v = -v
		sign = 0x80
	}
	if v > clip {
		v = clip
	}
	v += bias
	exp := 7
	for mask := 0x4000; v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (v >> (exp + 3)) & 0x0f
	return ^(sign | byte(exp<<4) | byte(mant))
}
