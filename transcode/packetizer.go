package transcode

// frameSink consumes whole frames from a packetizer.
type frameSink interface {
	// frame handles one frame of samples whose first sample has output
	// timestamp ts; marker is set on the first frame of a talkspurt.
	// pcm is only valid during the call.
	frame(pcm []int16, ts uint32, marker bool)
}

// packetizer cuts a stream of PCM chunks, each stamped with the output
// timestamp of its first sample, into fixed frames: SIP packets of the
// negotiated ptime one way, 20 ms Opus frames the other. Chunks need not
// line up with frames (20 ms Opus into 30 ms G.711, 10 ms G.711 into Opus).
//
// A timestamp gap (DTX, a skipped hole) first completes the current frame
// with silence so frames stay whole, then jumps: output timestamps advance
// by the elapsed input time, never backwards.
type packetizer struct {
	buf   []int16
	n     int    // samples in buf
	ts    uint32 // output timestamp of buf[0]
	valid bool
	mark  bool
	clock int // output RTP clock rate
	rate  int // sample rate
	start uint32
	// talkspurtGap is the shortest jump, in output ticks, that counts as
	// silence rather than a lost packet and so gets the marker bit.
	talkspurtGap uint32
	sink         frameSink
}

func (p *packetizer) init(frame, rate, clock int, start uint32, talkspurtGap int) {
	p.buf = make([]int16, frame)
	p.rate, p.clock = rate, clock
	p.start = start
	p.talkspurtGap = uint32(talkspurtGap)
}

func (p *packetizer) ticks(samples int) uint32 {
	return uint32(int64(samples) * int64(p.clock) / int64(p.rate))
}

func (p *packetizer) samples(ticks uint32) int {
	return int(int64(ticks) * int64(p.rate) / int64(p.clock))
}

// nextTS is the output timestamp the next sample would get if the stream
// continued without a gap.
func (p *packetizer) nextTS() uint32 {
	if !p.valid {
		return p.start
	}
	return p.ts + p.ticks(p.n)
}

// push appends pcm, whose first sample has output timestamp ts.
func (p *packetizer) push(pcm []int16, ts uint32) {
	if !p.valid {
		p.valid, p.ts, p.n, p.mark = true, ts, 0, true
	}
	exp := p.ts + p.ticks(p.n)
	// A negative gap (overlap) cannot come from the bridge's own mapping,
	// which re-anchors on steps backwards; ignore it and stay continuous.
	if gap := int32(ts - exp); gap > 0 {
		gs := p.samples(uint32(gap))
		if p.n > 0 {
			fill := min(gs, len(p.buf)-p.n)
			clear(p.buf[p.n : p.n+fill])
			p.n += fill
			gs -= fill
			if p.n == len(p.buf) {
				p.emit()
			}
		}
		if gs > 0 {
			p.n = 0
			p.ts = ts
			if uint32(gap) >= p.talkspurtGap {
				p.mark = true
			}
		}
	}
	for len(pcm) > 0 {
		c := copy(p.buf[p.n:], pcm)
		p.n += c
		pcm = pcm[c:]
		if p.n == len(p.buf) {
			p.emit()
		}
	}
}

func (p *packetizer) emit() {
	p.sink.frame(p.buf, p.ts, p.mark)
	p.mark = false
	p.ts += p.ticks(len(p.buf))
	p.n = 0
}
