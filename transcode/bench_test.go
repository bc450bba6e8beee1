package transcode

import (
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/transcode/tone"
)

// loopReader replays 50 packets (one call-second) with sequence numbers
// and timestamps advancing, limit packets in all, then returns io.EOF. It
// does not allocate, so the benchmark sees only the bridge.
type loopReader struct {
	payloads [][]byte
	pt       uint8
	tsStep   uint32
	i, limit int
}

func (r *loopReader) ReadRTP(b []byte) (int, error) {
	if r.i >= r.limit {
		return 0, io.EOF
	}
	p := r.payloads[r.i%len(r.payloads)]
	putRTPHeader(b, r.i == 0, r.pt, uint16(r.i), uint32(r.i)*r.tsStep, 0x1234)
	n := copy(b[rtpHeaderLen:], p)
	r.i++
	return rtpHeaderLen + n, nil
}

type discard struct{}

func (discard) WriteRTP([]byte) error { return nil }

func payloads(pkts [][]byte) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		var h rtpPacket
		_ = parseRTP(p, &h)
		out[i] = h.Payload
	}
	return out
}

func opusCallSecond(b testing.TB) *loopReader {
	return &loopReader{payloads: payloads(opusStream(b, tone.Generate([]float64{400, 1000}, 48000, 48000, 0.2), true, 0, 0, 1)), pt: 111, tsStep: 960}
}

func sipCallSecond(codec string, pt uint8, rate int) *loopReader {
	return &loopReader{payloads: payloads(sipStream(codec, pt, tone.Generate([]float64{400, 1000}, rate, rate, 0.2), 20, 0, 0, 1)), pt: pt, tsStep: 160}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report adds process CPU time per op (one call-second) and, for a whole
// call (both directions), the implied number of calls one core sustains.
func report(b *testing.B, cpu time.Duration, wholeCall bool) {
	us := float64(cpu.Microseconds()) / float64(b.N)
	b.ReportMetric(us, "cpu-µs/call-s")
	if wholeCall {
		b.ReportMetric(1e6/us, "calls/core")
	} else {
		// A call needs this direction and the other one too.
		b.ReportMetric(1e6/us, "directions/core")
	}
}

var benchCodecs = []struct {
	name string
	pt   uint8
	rate int
}{{"PCMU", 0, 8000}, {"G722", 9, 16000}}

// BenchmarkToSIP: one op is one call-second of Opus (50 packets, 20 ms)
// decoded and re-encoded towards the SIP leg.
func BenchmarkToSIP(b *testing.B) {
	for _, c := range benchCodecs {
		b.Run(c.name, func(b *testing.B) {
			br := newTestBridge(b, c.name, c.pt, nil)
			r := opusCallSecond(b)
			r.limit = 50 * b.N
			b.ReportAllocs()
			b.ResetTimer()
			t0 := cpuTime()
			_ = br.RunToSIP(r, discard{})
			report(b, cpuTime()-t0, false)
		})
	}
}

// BenchmarkToWebRTC: one op is one call-second of G.711/G.722 (50
// packets) encoded to Opus, at two encoder complexities.
func BenchmarkToWebRTC(b *testing.B) {
	for _, c := range benchCodecs {
		for _, cx := range []int{0, 5} {
			b.Run(fmt.Sprintf("%s/complexity=%d", c.name, cx), func(b *testing.B) {
				br := newTestBridge(b, c.name, c.pt, func(o *Options) { o.OpusComplexity = cx })
				r := sipCallSecond(c.name, c.pt, c.rate)
				r.limit = 50 * b.N
				b.ReportAllocs()
				b.ResetTimer()
				t0 := cpuTime()
				_ = br.RunToWebRTC(r, discard{})
				report(b, cpuTime()-t0, false)
			})
		}
	}
}

// BenchmarkCallSecond: one op is one second of a transcoded call, both
// directions (100 packets).
func BenchmarkCallSecond(b *testing.B) {
	for _, c := range benchCodecs {
		for _, cx := range []int{0, 5} {
			b.Run(fmt.Sprintf("%s/complexity=%d", c.name, cx), func(b *testing.B) {
				br := newTestBridge(b, c.name, c.pt, func(o *Options) { o.OpusComplexity = cx })
				toSIP := opusCallSecond(b)
				toWeb := sipCallSecond(c.name, c.pt, c.rate)
				toSIP.limit, toWeb.limit = 50*b.N, 50*b.N
				b.ReportAllocs()
				b.ResetTimer()
				t0 := cpuTime()
				// Sequential on one goroutine: CPU per call-second is the
				// sum of both directions whichever way they are scheduled.
				_ = br.RunToSIP(toSIP, discard{})
				_ = br.RunToWebRTC(toWeb, discard{})
				report(b, cpuTime()-t0, true)
			})
		}
	}
}

// TestBridgeZeroAllocs feeds packets one at a time through both directions,
// with losses, DTMF, late and malformed packets on the way, and requires
// zero allocations per packet.
func TestBridgeZeroAllocs(t *testing.T) {
	for _, c := range sipCodecs {
		br := newTestBridge(t, c.name, c.pt, func(o *Options) { o.OpusFEC, o.OpusDTX, o.PtimeMs = true, true, 30 })
		br.sip.to, br.web.to = discard{}, discard{}
		opusIn := opusCallSecond(t)
		opusIn.limit = 1 << 30
		sipIn := sipCallSecond(c.name, c.pt, c.rate)
		sipIn.limit = 1 << 30
		buf := make([]byte, readBufSize)
		dtmf := rtp(126, false, 0, 0, 0x1234, eventPayload(1, false, 10, 960))
		i := 0
		step := func() {
			i++
			n, _ := opusIn.ReadRTP(buf)
			switch {
			case i%10 == 3: // lost
			case i%17 == 5: // DTMF in place of audio
				putRTPHeader(dtmf, false, 126, uint16(opusIn.i-1), uint32(opusIn.i-1)*960, 0x1234)
				br.sip.handle(&br.sip, dtmf)
			case i%23 == 7:
				br.sip.handle(&br.sip, buf[:5]) // malformed
			default:
				br.sip.handle(&br.sip, buf[:n])
			}
			n, _ = sipIn.ReadRTP(buf)
			if i%11 != 4 {
				br.web.handle(&br.web, buf[:n])
			}
		}
		for range 100 {
			step() // warm up: first-packet paths
		}
		if a := testing.AllocsPerRun(1000, step); a != 0 {
			t.Errorf("%s: %v allocations per packet pair", c.name, a)
		}
		st := br.Stats()
		if st.PLCFrames+st.FECFrames == 0 || st.DTMFEventsToSIP == 0 || st.DroppedPackets == 0 || st.ToWebRTCFrames == 0 {
			t.Errorf("%s: the allocation test did not exercise every path: %+v", c.name, st)
		}
	}
}
