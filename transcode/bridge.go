package transcode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/hraban/opus"

	"github.com/mediarelay/mediarelay/media"
)

// Options configures a Bridge. Payload types are the ones negotiated on
// each leg.
type Options struct {
	// OpusPT is the payload type of Opus (opus/48000/2) on the WebRTC leg.
	OpusPT uint8
	// WebRTCDTMFPT is the telephone-event/48000 payload type on the WebRTC
	// leg, 0 if none was negotiated.
	WebRTCDTMFPT uint8

	// SIPCodec is the SIP leg's codec: "PCMU", "PCMA" or "G722".
	SIPCodec string
	// SIPPT is its payload type (0, 8 and 9 are the static ones).
	SIPPT uint8
	// SIPDTMFPT is the telephone-event/8000 payload type on the SIP leg,
	// 0 if none was negotiated.
	SIPDTMFPT uint8
	// PtimeMs is the packetisation towards the SIP leg: 10, 20, 30 or 40.
	// Zero means 20. Incoming SIP packets may use any ptime.
	PtimeMs int

	// OpusComplexity is the encoder complexity, 0–10. The zero value is
	// the cheapest setting: libopus takes ~25 µs to encode a 20 ms frame
	// at 0 against ~60 µs at 5 on a 2-vCPU EPYC.
	OpusComplexity int
	// OpusBitrate is the encoder bit rate in bit/s; 0 leaves libopus's
	// default for the sample rate.
	OpusBitrate int
	// OpusPacketLoss is the expected loss in percent (0–100); with
	// OpusFEC it sets how much in-band redundancy the encoder spends.
	OpusPacketLoss int
	// OpusFEC enables in-band forward error correction (LBRR).
	OpusFEC bool
	// OpusDTX enables discontinuous transmission: silent frames are not
	// sent, and the browser's jitter buffer plays comfort noise.
	OpusDTX bool
}

// Stats are the Bridge's counters. All fields only ever grow.
type Stats struct {
	// ToSIPFrames counts Opus packets received and decoded.
	ToSIPFrames uint64
	// ToSIPPackets counts packets written to the SIP leg (audio and DTMF).
	ToSIPPackets uint64
	// ToWebRTCFrames counts 20 ms frames encoded to Opus, including
	// frames DTX kept off the wire.
	ToWebRTCFrames uint64
	// ToWebRTCPackets counts packets written to the WebRTC leg.
	ToWebRTCPackets uint64
	// PLCFrames counts Opus frames concealed by the decoder's PLC.
	PLCFrames uint64
	// FECFrames counts Opus frames recovered from the next packet's
	// in-band FEC (libopus falls back to PLC if it carried none).
	FECFrames uint64
	// LostPackets counts sequence numbers that never arrived, both ways.
	LostPackets uint64
	// LatePackets counts packets that arrived after their turn had passed,
	// and duplicates; they are dropped.
	LatePackets uint64
	// DroppedPackets counts malformed RTP, unknown payload types (such as
	// comfort noise), payloads that failed to decode, and oversized ones.
	DroppedPackets uint64
	// Discontinuities counts holes too long to conceal, sequence restarts,
	// timestamp steps backwards and SSRC changes.
	Discontinuities uint64
	// DTMFEventsToSIP and DTMFEventsToWebRTC count forwarded RFC 4733
	// events (distinct start timestamps).
	DTMFEventsToSIP    uint64
	DTMFEventsToWebRTC uint64
	// DTMFDropped counts telephone-event packets dropped because the other
	// leg has no telephone-event payload type (or their payload is bad).
	DTMFDropped uint64
	// WriteErrors counts packets the writer refused.
	WriteErrors uint64
}

type counters struct {
	toSIPFrames, toSIPPackets, toWebRTCFrames, toWebRTCPackets atomic.Uint64
	plc, fec, lost, late, dropped, discont                     atomic.Uint64
	dtmfToSIP, dtmfToWebRTC, dtmfDropped, writeErrors          atomic.Uint64
}

// Bridge transcodes one call between its WebRTC leg (Opus) and its SIP leg
// (G.711 or G.722). RunToSIP and RunToWebRTC each run one direction, each
// in its own goroutine; Stats may be called from anywhere.
//
// Every buffer, the codecs and the reorder rings are allocated by
// NewBridge, so the packet path does not allocate.
type Bridge struct {
	c   *counters // shared with the call's earlier bridges (Successor)
	sip toSIP
	web toWebRTC
}

// Codec identifiers on the SIP leg.
type sipCodec int

const (
	codecPCMU sipCodec = iota
	codecPCMA
	codecG722
)

const (
	opusClock = 48000 // RTP clock of Opus and of telephone-event on the WebRTC leg
	sipClock  = 8000  // RTP clock of PCMU, PCMA, G.722 (RFC 3551 §4.5.2) and telephone-event
	frameMs   = 20    // Opus frame length, both ways
	// maxOpusSamples is the longest Opus packet (120 ms) at 16 kHz.
	maxOpusSamples = 120 * 16
	// outBufSize holds any packet the bridge writes.
	outBufSize = rtpHeaderLen + maxPayload
	// readBufSize is the read buffer; a larger packet is truncated by the
	// reader and then fails to parse or decode, which drops it.
	readBufSize = 2048
	// talkspurtGap: a timestamp jump longer than this starts a new
	// talkspurt and sets the RTP marker bit (RFC 3551 §4.1).
	talkspurtGapMs = 60
)

// NewBridge validates o and allocates everything a call needs.
func NewBridge(o Options) (*Bridge, error) { return newBridge(o, &counters{}) }

// Successor makes the bridge that takes over from b when the call's SIP
// codec changes: a new bridge for o whose Stats go on from b's, so the
// call's counters survive the change and b can be dropped once its
// directions are switched away from.
func (b *Bridge) Successor(o Options) (*Bridge, error) { return newBridge(o, b.c) }

func newBridge(o Options, c *counters) (*Bridge, error) {
	var codec sipCodec
	rate := 8000
	switch o.SIPCodec {
	case "PCMU":
		codec = codecPCMU
	case "PCMA":
		codec = codecPCMA
	case "G722":
		codec, rate = codecG722, 16000
	default:
		return nil, fmt.Errorf("transcode: SIP codec %q: want PCMU, PCMA or G722", o.SIPCodec)
	}
	ptime := o.PtimeMs
	switch ptime {
	case 0:
		ptime = 20
	case 10, 20, 30, 40:
	default:
		return nil, fmt.Errorf("transcode: ptime %d ms: want 10, 20, 30 or 40", o.PtimeMs)
	}
	for _, pt := range []struct {
		name string
		v    uint8
	}{{"OpusPT", o.OpusPT}, {"WebRTCDTMFPT", o.WebRTCDTMFPT}, {"SIPPT", o.SIPPT}, {"SIPDTMFPT", o.SIPDTMFPT}} {
		if pt.v > 127 {
			return nil, fmt.Errorf("transcode: %s %d is not a 7-bit payload type", pt.name, pt.v)
		}
	}
	if (o.WebRTCDTMFPT != 0 && o.OpusPT == o.WebRTCDTMFPT) || (o.SIPDTMFPT != 0 && o.SIPPT == o.SIPDTMFPT) {
		return nil, errors.New("transcode: audio and telephone-event share a payload type")
	}
	if o.OpusComplexity < 0 || o.OpusComplexity > 10 {
		return nil, fmt.Errorf("transcode: Opus complexity %d: want 0–10", o.OpusComplexity)
	}
	if o.OpusPacketLoss < 0 || o.OpusPacketLoss > 100 {
		return nil, fmt.Errorf("transcode: Opus packet loss %d%%: want 0–100", o.OpusPacketLoss)
	}
	if o.OpusBitrate < 0 || (o.OpusBitrate != 0 && (o.OpusBitrate < 500 || o.OpusBitrate > 512000)) {
		return nil, fmt.Errorf("transcode: Opus bit rate %d: want 0 (default) or 500–512000", o.OpusBitrate)
	}

	// Decoding and encoding at the SIP leg's rate lets libopus resample
	// internally, so there is no separate resampler on the path.
	dec, err := opus.NewDecoder(rate, 1)
	if err != nil {
		return nil, fmt.Errorf("opus decoder: %w", err)
	}
	enc, err := opus.NewEncoder(rate, 1, opus.AppVoIP)
	if err != nil {
		return nil, fmt.Errorf("opus encoder: %w", err)
	}
	if err := configureEncoder(enc, o); err != nil {
		return nil, fmt.Errorf("opus encoder: %w", err)
	}

	b := &Bridge{c: c}
	frame := rate * frameMs / 1000

	s := &b.sip
	s.init(b.c, rate, sipClock, rate*ptime/1000, opusClock, o.WebRTCDTMFPT, o.SIPDTMFPT, 1, 6)
	s.pk.sink = s
	s.ring.h = s
	s.codec, s.sipPT, s.opusPT = codec, o.SIPPT, o.OpusPT
	s.dec = dec
	s.pcm = make([]int16, maxOpusSamples)
	s.lastSamples = frame
	s.fec = o.OpusFEC
	if codec == codecG722 {
		s.g722 = NewG722Encoder()
	}
	s.frames, s.packets, s.events = &c.toSIPFrames, &c.toSIPPackets, &c.dtmfToSIP

	w := &b.web
	w.init(b.c, rate, opusClock, frame, sipClock, o.SIPDTMFPT, o.WebRTCDTMFPT, 6, 1)
	w.pk.sink = w
	w.ring.h = w
	w.codec, w.sipPT, w.opusPT = codec, o.SIPPT, o.OpusPT
	w.enc = enc
	w.dtx = o.OpusDTX
	// A SIP payload of maxPayload bytes is at most 2×maxPayload samples (G.722).
	w.pcm = make([]int16, 2*maxPayload)
	if codec == codecG722 {
		w.g722 = NewG722Decoder()
	}
	w.frames, w.packets, w.events = &c.toWebRTCFrames, &c.toWebRTCPackets, &c.dtmfToWebRTC
	return b, nil
}

func configureEncoder(enc *opus.Encoder, o Options) error {
	if err := enc.SetComplexity(o.OpusComplexity); err != nil {
		return fmt.Errorf("complexity %d: %w", o.OpusComplexity, err)
	}
	if o.OpusBitrate != 0 {
		if err := enc.SetBitrate(o.OpusBitrate); err != nil {
			return fmt.Errorf("bit rate %d: %w", o.OpusBitrate, err)
		}
	}
	if err := enc.SetInBandFEC(o.OpusFEC); err != nil {
		return fmt.Errorf("in-band FEC: %w", err)
	}
	if err := enc.SetPacketLossPerc(o.OpusPacketLoss); err != nil {
		return fmt.Errorf("packet loss %d%%: %w", o.OpusPacketLoss, err)
	}
	if err := enc.SetDTX(o.OpusDTX); err != nil {
		return fmt.Errorf("DTX: %w", err)
	}
	return nil
}

// Stats returns a snapshot of the counters, those of the bridges b
// succeeded included. It is safe to call while the bridge runs.
func (b *Bridge) Stats() Stats {
	c := b.c
	return Stats{
		ToSIPFrames:        c.toSIPFrames.Load(),
		ToSIPPackets:       c.toSIPPackets.Load(),
		ToWebRTCFrames:     c.toWebRTCFrames.Load(),
		ToWebRTCPackets:    c.toWebRTCPackets.Load(),
		PLCFrames:          c.plc.Load(),
		FECFrames:          c.fec.Load(),
		LostPackets:        c.lost.Load(),
		LatePackets:        c.late.Load(),
		DroppedPackets:     c.dropped.Load(),
		Discontinuities:    c.discont.Load(),
		DTMFEventsToSIP:    c.dtmfToSIP.Load(),
		DTMFEventsToWebRTC: c.dtmfToWebRTC.Load(),
		DTMFDropped:        c.dtmfDropped.Load(),
		WriteErrors:        c.writeErrors.Load(),
	}
}

var errRunning = errors.New("transcode: direction already running")

// RunToSIP reads Opus RTP from the WebRTC leg and writes G.711 or G.722 RTP
// to the SIP leg until from returns an error, which it returns wrapped.
// Write errors are counted, not fatal: the leg's reader ends the call.
func (b *Bridge) RunToSIP(from media.RTPReader, to media.RTPWriter) error {
	return b.sip.run(&b.sip, from, to, "to SIP")
}

// RunToWebRTC reads G.711 or G.722 RTP from the SIP leg and writes Opus RTP
// to the WebRTC leg until from returns an error, which it returns wrapped.
func (b *Bridge) RunToWebRTC(from media.RTPReader, to media.RTPWriter) error {
	return b.web.run(&b.web, from, to, "to WebRTC")
}

// direction is the part of a direction shared by both: input tracking,
// timestamp mapping, packetisation, output stream and DTMF re-timing.
type direction struct {
	c       *counters
	running atomic.Bool
	to      media.RTPWriter
	rbuf    []byte
	out     []byte
	pkt     rtpPacket
	ring    reorder
	pk      packetizer

	// Input stream.
	haveSSRC  bool
	inSSRC    uint32
	inClock   int
	rate      int  // PCM sample rate between decoder and encoder
	audioSeen bool // an audio packet has been decoded since the last rebase

	// Mapping of input to output timestamps: out = outBase +
	// (in-inBase)*mul/div, re-anchored on every audio packet so the
	// difference stays small. needRebase anchors the next packet to
	// wherever the output stream has got to (start, new SSRC).
	needRebase      bool
	inBase, outBase uint32
	mul, div        int64
	nextIn          uint32 // input timestamp expected for the next audio

	// Output stream.
	outSSRC  uint32
	outSeq   uint16
	outClock int
	sent     bool
	sentAt   int64 // unix ns of the last packet written, for Position

	// DTMF.
	dtmfIn, dtmfOut uint8
	haveEvent       bool
	eventIn         uint32 // start timestamp of the current event, input clock
	eventOut        uint32 // and mapped to the output clock

	frames, packets, events *atomic.Uint64
}

func (d *direction) init(c *counters, rate, outClock, frameSamples, inClock int, dtmfIn, dtmfOut uint8, mul, div int64) {
	d.c = c
	d.rbuf = make([]byte, readBufSize)
	d.out = make([]byte, outBufSize)
	d.rate, d.inClock, d.outClock = rate, inClock, outClock
	d.mul, d.div = mul, div
	d.needRebase = true
	// RFC 3550 §5.1: random SSRC and initial sequence number and timestamp.
	d.outSSRC = rand.Uint32()
	d.outSeq = uint16(rand.Uint32())
	d.pk.init(frameSamples, rate, outClock, rand.Uint32(), talkspurtGapMs*outClock/1000)
	d.dtmfIn, d.dtmfOut = dtmfIn, dtmfOut
}

// handler is what each direction adds to direction.
type handler interface {
	seqHandler
	frameSink
	audioPT() uint8
}

func (d *direction) run(h handler, from media.RTPReader, to media.RTPWriter, name string) error {
	if !d.running.CompareAndSwap(false, true) {
		return errRunning
	}
	defer d.running.Store(false)
	d.to = to
	for {
		n, err := from.ReadRTP(d.rbuf)
		if err != nil {
			// Play out what the reorder buffer still holds; the writer may
			// already be closed, which only counts write errors.
			d.ring.flush()
			return fmt.Errorf("transcode %s: read: %w", name, err)
		}
		// A misbehaving reader must not be able to make us slice out of range.
		d.handle(h, d.rbuf[:max(0, min(n, len(d.rbuf)))])
	}
}

// handle processes one incoming packet. It never panics and never
// allocates: a bad packet is counted and dropped.
func (d *direction) handle(h handler, b []byte) {
	p := &d.pkt
	if err := parseRTP(b, p); err != nil || len(p.Payload) > maxPayload {
		d.c.dropped.Add(1)
		return
	}
	if p.PT != h.audioPT() && (d.dtmfIn == 0 || p.PT != d.dtmfIn) {
		// Comfort noise, RED, anything not negotiated for this bridge.
		// It still occupies a sequence number, which is why it is not
		// dropped before the reorder buffer: that would look like loss.
		d.c.dropped.Add(1)
		p.Payload = p.Payload[:0]
	}
	if !d.haveSSRC || p.SSRC != d.inSSRC {
		if d.haveSSRC {
			// A new source (re-INVITE, SSRC collision, failover): finish
			// the old stream and splice the new one on without a jump.
			d.ring.flush()
			d.ring.reset()
			d.needRebase = true
			d.c.discont.Add(1)
		}
		d.haveSSRC, d.inSSRC = true, p.SSRC
	}
	d.ring.push(p)
}

// mapTS converts an input timestamp to the output clock, anchoring the
// mapping first if needed.
func (d *direction) mapTS(in uint32) uint32 {
	if d.needRebase {
		d.rebase(in)
	}
	delta := int64(int32(in - d.inBase))
	return d.outBase + uint32(delta*d.mul/d.div)
}

// rebase anchors input timestamp in to where the output stream has got to,
// so the output continues without a jump.
func (d *direction) rebase(in uint32) {
	d.needRebase = false
	d.inBase, d.outBase = in, d.pk.nextTS()
	d.nextIn = in
	d.audioSeen = false
}

// audioTS maps the timestamp of an audio frame, treating a step backwards
// of the sender's clock as a discontinuity rather than as a huge gap.
func (d *direction) audioTS(in uint32) uint32 {
	if !d.needRebase && d.audioSeen && int32(in-d.nextIn) < 0 {
		d.c.discont.Add(1)
		d.rebase(in)
	}
	return d.mapTS(in)
}

// advance records that samples of audio starting at input timestamp in
// (mapped to out) have been handed to the packetiser.
func (d *direction) advance(in, out uint32, samples int) {
	d.audioSeen = true
	d.nextIn = in + uint32(samples*d.inClock/d.rate)
	d.inBase, d.outBase = in, out
}

// send writes the packet whose payload (payloadLen bytes) is already in
// d.out after the header.
func (d *direction) send(pt uint8, marker bool, ts uint32, payloadLen int) {
	if !d.sent {
		marker, d.sent = true, true
	}
	putRTPHeader(d.out, marker, pt, d.outSeq, ts, d.outSSRC)
	d.outSeq++
	d.sentAt = time.Now().UnixNano()
	if err := d.to.WriteRTP(d.out[:rtpHeaderLen+payloadLen]); err != nil {
		d.c.writeErrors.Add(1)
		return
	}
	d.packets.Add(1)
}

// ToSIPStage returns the WebRTC → SIP direction as a media.Stage writing
// to to, for a media.Path that can replace it when the call's codecs
// change. A direction runs either as a Stage or in RunToSIP, not both.
func (b *Bridge) ToSIPStage(to media.RTPWriter) media.Stage {
	b.sip.to = to
	return &stage{d: &b.sip.direction, h: &b.sip}
}

// ToWebRTCStage is ToSIPStage for the SIP → WebRTC direction.
func (b *Bridge) ToWebRTCStage(to media.RTPWriter) media.Stage {
	b.web.to = to
	return &stage{d: &b.web.direction, h: &b.web}
}

// stage adapts one direction to media.Stage.
type stage struct {
	d *direction
	h handler
}

func (s *stage) Process(pkt []byte) { s.d.handle(s.h, pkt) }

// Flush plays out what the reorder buffer holds.
func (s *stage) Flush() { s.d.ring.flush() }

func (s *stage) Position() media.StreamPos {
	d := s.d
	if !d.sent {
		return media.StreamPos{}
	}
	return media.StreamPos{SSRC: d.outSSRC, Seq: d.outSeq - 1, NextTS: d.pk.nextTS(), Clock: uint32(d.outClock), At: d.sentAt}
}

// Resume takes over the SSRC and numbering of the stream p describes, so a
// codec change on the other leg is no new stream to this leg's receiver.
// The first packet still carries the marker bit: a new talkspurt.
func (s *stage) Resume(p media.StreamPos) {
	d := s.d
	if !p.Valid() || d.sent || d.pk.valid {
		return
	}
	d.outSSRC = p.SSRC
	d.outSeq = p.Seq + 1
	d.pk.start = p.TSAfter(uint32(d.outClock), time.Now().UnixNano())
}

// dtmf re-times an RFC 4733 telephone-event packet: new payload type,
// timestamp mapped like the audio, durations rescaled between clocks. Every
// packet is forwarded, end-of-event retransmissions included, each with its
// own output sequence number.
func (d *direction) dtmf(s *slot) {
	if d.dtmfOut == 0 {
		d.c.dtmfDropped.Add(1)
		return
	}
	if s.n < 4 {
		d.c.dtmfDropped.Add(1)
		return
	}
	if !d.haveEvent || s.ts != d.eventIn {
		// A new event. Its start timestamp is mapped once so that every
		// packet of the event carries the same output timestamp even if
		// audio re-anchors the mapping meanwhile.
		d.haveEvent = true
		d.eventIn = s.ts
		d.eventOut = d.mapTS(s.ts)
		d.events.Add(1)
	}
	n := rescaleEvents(d.out[rtpHeaderLen:], s.payload(), uint32(d.mul), uint32(d.div))
	if n == 0 {
		d.c.dtmfDropped.Add(1)
		return
	}
	// The marker of the first packet of an event is kept (RFC 4733 §2.5.1.3).
	d.send(d.dtmfOut, s.marker, d.eventOut, n)
}
