package transcode

import (
	"github.com/hraban/opus"
)

// toSIP is the WebRTC → SIP direction: Opus in, G.711/G.722 out.
type toSIP struct {
	direction
	codec         sipCodec
	sipPT, opusPT uint8
	dec           *opus.Decoder
	g722          *G722Encoder
	pcm           []int16 // decoder output, room for a 120 ms packet
	lastSamples   int     // length of the last decoded frame, for concealment
	fec           bool    // the far end was asked for FEC; try it on loss
}

func (d *toSIP) audioPT() uint8 { return d.opusPT }

func (d *toSIP) play(s *slot) {
	switch {
	case s.pt == d.opusPT && s.n > 0:
		n, err := d.dec.Decode(s.payload(), d.pcm[:maxOpusSamples:maxOpusSamples])
		if err != nil || n == 0 {
			d.c.dropped.Add(1)
			d.conceal(nil, s.ts)
			return
		}
		d.frames.Add(1)
		d.lastSamples = n
		out := d.audioTS(s.ts)
		d.pk.push(d.pcm[:n], out)
		d.advance(s.ts, out, n)
	case s.pt == d.dtmfIn && d.dtmfIn != 0:
		d.dtmf(s)
	}
}

func (d *toSIP) lost(next *slot) {
	d.c.lost.Add(1)
	if !d.audioSeen {
		return // nothing to conceal from; the mapping will anchor on the next packet
	}
	d.conceal(next, d.nextIn)
}

// conceal produces one frame for a missing packet expected at input
// timestamp in: from the next packet's in-band FEC when that packet is
// here, else by the decoder's packet loss concealment.
func (d *toSIP) conceal(next *slot, in uint32) {
	n := d.lastSamples
	// libopus takes the frame size from the buffer's capacity.
	buf := d.pcm[:n:n]
	var err error
	if d.fec && next != nil && next.pt == d.opusPT && next.n > 0 {
		err = d.dec.DecodeFEC(next.payload(), buf)
		d.c.fec.Add(1)
	} else {
		err = d.dec.DecodePLC(buf)
		d.c.plc.Add(1)
	}
	if err != nil {
		clear(buf)
	}
	out := d.audioTS(in)
	d.pk.push(buf, out)
	d.advance(in, out, n)
}

func (d *toSIP) discontinuity() { d.c.discont.Add(1) }
func (d *toSIP) late()          { d.c.late.Add(1) }

// frame encodes one SIP packet's worth of samples and sends it.
func (d *toSIP) frame(pcm []int16, ts uint32, marker bool) {
	dst := d.out[rtpHeaderLen:]
	var n int
	switch d.codec {
	case codecPCMU:
		MulawEncode(dst, pcm)
		n = len(pcm)
	case codecPCMA:
		AlawEncode(dst, pcm)
		n = len(pcm)
	case codecG722:
		n = d.g722.Encode(dst, pcm)
	}
	d.send(d.sipPT, marker, ts, n)
}

// toWebRTC is the SIP → WebRTC direction: G.711/G.722 in, Opus out.
type toWebRTC struct {
	direction
	codec         sipCodec
	sipPT, opusPT uint8
	enc           *opus.Encoder
	g722          *G722Decoder
	pcm           []int16 // decoded SIP payload
	dtx           bool
	afterDTX      bool // frames were withheld; mark the next one sent
}

func (d *toWebRTC) audioPT() uint8 { return d.sipPT }

func (d *toWebRTC) play(s *slot) {
	switch {
	case s.pt == d.sipPT && s.n > 0:
		var n int
		switch d.codec {
		case codecPCMU:
			n = min(s.n, len(d.pcm))
			MulawDecode(d.pcm[:n], s.payload())
		case codecPCMA:
			n = min(s.n, len(d.pcm))
			AlawDecode(d.pcm[:n], s.payload())
		case codecG722:
			n = d.g722.Decode(d.pcm, s.payload())
		}
		out := d.audioTS(s.ts)
		d.pk.push(d.pcm[:n], out)
		d.advance(s.ts, out, n)
	case s.pt == d.dtmfIn && d.dtmfIn != 0:
		d.dtmf(s)
	}
}

// lost leaves the hole in the timestamps: the browser's jitter buffer
// conceals it with Opus PLC, which sounds better than anything we could
// encode in its place. The packetizer pads a partly filled frame.
func (d *toWebRTC) lost(*slot) { d.c.lost.Add(1) }

func (d *toWebRTC) discontinuity() { d.c.discont.Add(1) }
func (d *toWebRTC) late()          { d.c.late.Add(1) }

// frame encodes one 20 ms Opus frame and sends it unless DTX withholds it.
func (d *toWebRTC) frame(pcm []int16, ts uint32, marker bool) {
	n, err := d.enc.Encode(pcm, d.out[rtpHeaderLen:])
	if err != nil {
		d.c.dropped.Add(1)
		return
	}
	d.frames.Add(1)
	// With DTX, libopus returns a packet of at most 2 bytes for a frame
	// that need not be sent (RFC 6716 §2.1.9 / opus_encode docs).
	if d.dtx && n <= 2 {
		d.afterDTX = true
		return
	}
	d.send(d.opusPT, marker || d.afterDTX, ts, n)
	d.afterDTX = false
}
