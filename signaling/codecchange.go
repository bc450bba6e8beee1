package signaling

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/transcode"
)

// A trunk may change codec in the middle of a call (a re-INVITE or UPDATE
// whose offer drops the codec negotiated at setup, or renumbers it or
// telephone-event). The relay follows, as a carrier's media relay does,
// without renegotiating the browser leg: the browser keeps its codec and
// the relay re-plumbs what joins the two legs. Each direction of a call is
// one media.Path, a read loop that lives as long as the call, running the
// current media.Stage; a change builds fresh stages for the new plan and
// switches both paths to them, between two packets and without touching a
// leg. The new stages carry on the old ones' outgoing streams (SSRC,
// sequence numbers, timestamps), so neither far end sees a new stream.

// activeMedia is the call's media as last settled: replaced as a whole,
// atomically, when the trunk changes codec, so any goroutine can read it.
type activeMedia struct {
	plan mediaPlan
	// The two directions; nil until forwarding starts.
	toSIP, toWeb *media.Path
	// bridge is the last Opus bridge the call used, nil if none; its
	// Stats count those of the bridges before it (transcode.Successor).
	bridge *transcode.Bridge
	// toWebDone is closed when toWeb's read loop returns (its SIP leg
	// closed, or paused for a new one: swapSIPLeg).
	toWebDone chan struct{}
}

// currentPlan is the call's media plan; zero before the media is settled.
func (c *Call) currentPlan() mediaPlan {
	if m := c.active.Load(); m != nil {
		return m.plan
	}
	return mediaPlan{}
}

// joining is how a plan joins the browser's leg to the trunk's.
type joining int

const (
	joinNone      joining = iota
	joinForward           // the same codec on both legs: payload types mapped
	joinRecode            // G.711 μ-law on one leg, A-law on the other: byte by byte
	joinTranscode         // Opus on the browser leg: decoded and re-encoded
)

func isG711(name string) bool {
	return strings.EqualFold(name, "PCMU") || strings.EqualFold(name, "PCMA")
}

// joinFor says how the relay can join a browser leg on codec browser to a
// SIP leg on codec sip, and whether mode allows it.
func joinFor(mode, browser, sip string) joining {
	switch {
	case strings.EqualFold(browser, sip):
		if mode != ModeTranscode {
			return joinForward
		}
	case mode == ModePassthrough:
	case strings.EqualFold(browser, "opus") && transcodable(sip):
		return joinTranscode
	case isG711(browser) && isG711(sip):
		return joinRecode
	}
	return joinNone
}

// replan settles the media for a trunk's offer during the call. The
// browser's codec stays. The trunk's leg keeps its codec while the offer
// has it (taking the offer's payload types); otherwise it takes the
// browser's codec if offered (passthrough, the cheapest), else the first
// codec of the offer, in the trunk's order and among the trunk's
// configured codecs (allowed), that the relay can join to the browser's in
// mode:
//   - browser Opus: PCMU, PCMA or G722 through a new Opus bridge
//     (auto, transcode);
//   - browser PCMU, trunk PCMA or the reverse: a byte-by-byte G.711
//     conversion (auto, transcode);
//   - the browser's own codec: passthrough (auto, passthrough).
//
// Anything else is not supported and gets an error (the trunk hears 488,
// the call goes on as it was): a codec other than the browser's in mode
// passthrough; Opus on the trunk leg in mode transcode; G.722 against
// G.711 or the reverse (the relay transcodes only to and from Opus, and
// moving the browser to Opus would need a WebRTC renegotiation); codecs
// the relay does not speak (G.729 ...).
func replan(mode string, allowed []string, cur mediaPlan, offer sdp.Audio) (mediaPlan, error) {
	next := cur
	found := false
	if c, ok := offer.Find(cur.SIPCodec.Name); ok && c.Clock == cur.SIPCodec.Clock {
		next.SIPCodec, found = c, true
	}
	pick := func(ok func(sdp.Codec) bool) {
		for _, c := range offer.Codecs {
			if found || c.Is("telephone-event") || !hasFold(allowed, c.Name) || !ok(c) {
				continue
			}
			if j := joinFor(mode, cur.BrowserCodec, c.Name); j != joinNone {
				next.SIPCodec, found = c, true
				next.Mode = ModeTranscode
				if j == joinForward {
					next.Mode = ModePassthrough
				}
			}
		}
	}
	pick(func(c sdp.Codec) bool { return c.Is(cur.BrowserCodec) })
	pick(func(sdp.Codec) bool { return true })
	if !found {
		var names []string
		for _, c := range offer.Codecs {
			names = append(names, c.Name)
		}
		return cur, fmt.Errorf("trunk offers %s, none of which joins the browser's %s in mode %s: %w",
			strings.Join(names, " "), cur.BrowserCodec, mode, errNoCommonCodec)
	}
	next.SIPDTMF = sdp.Codec{}
	if ev, ok := offer.DTMF(next.SIPCodec.Clock); ok {
		next.SIPDTMF = ev
	} else if ev, ok := offer.DTMF(8000); ok {
		next.SIPDTMF = ev
	}
	return next, nil
}

// samePlumbing says whether a and b forward the same way: the same codecs
// and payload types. fmtp and the like may differ between a trunk's SDPs
// without it meaning anything to the relay.
func samePlumbing(a, b mediaPlan) bool {
	same := func(x, y sdp.Codec) bool { return x.Is(y.Name) && x.PT == y.PT && x.Clock == y.Clock }
	return a.Mode == b.Mode && a.BrowserCodec == b.BrowserCodec && same(a.SIPCodec, b.SIPCodec) && same(a.SIPDTMF, b.SIPDTMF)
}

// sipPtime is the packetisation towards the trunk: its SDP's, else the
// trunk's configured one.
func sipPtime(a sdp.Audio, route *config.Trunk) int {
	if a.Ptime != 0 {
		return a.Ptime
	}
	return route.Ptime
}

// stages builds the processing of both directions for plan: Forwarders
// where the legs share the codec (converting G.711 laws on the way where
// they differ only in that), else an Opus bridge, which it returns too
// (the successor of prev, if the call had one). Whether the trunk's mode
// allows the plan was settled by decide, planInbound or replan.
func (c *Call) stages(plan mediaPlan, ptime int, prev *transcode.Bridge) (toSIP, toWeb media.Stage, b *transcode.Bridge, err error) {
	if joinFor(ModeAuto, plan.BrowserCodec, plan.SIPCodec.Name) == joinTranscode {
		b, err := c.newBridge(plan, ptime, prev)
		if err != nil {
			return nil, nil, nil, err
		}
		return b.ToSIPStage(c.sipWriterFor(plan)), b.ToWebRTCStage(c.webRW()), b, nil
	}
	so := media.ForwarderOptions{PTMap: map[uint8]uint8{}, ClockRate: plan.SIPCodec.Clock, OnDrop: c.r.countDrop}
	wo := media.ForwarderOptions{PTMap: map[uint8]uint8{}, ClockRate: plan.SIPCodec.Clock, OnDrop: c.r.countDrop}
	if pt, ok := c.webPT(plan.BrowserCodec, 0); ok {
		so.PTMap[pt] = plan.SIPCodec.PT
		wo.PTMap[plan.SIPCodec.PT] = pt
		if !strings.EqualFold(plan.BrowserCodec, plan.SIPCodec.Name) {
			// Only G.711 to G.711 gets here (joinFor).
			so.Recode, _ = transcode.G711Recode(plan.BrowserCodec, plan.SIPCodec.Name)
			wo.Recode, _ = transcode.G711Recode(plan.SIPCodec.Name, plan.BrowserCodec)
			so.RecodePT, wo.RecodePT = pt, plan.SIPCodec.PT
		}
	}
	// telephone-event passes through only where both legs use the same clock;
	// across clocks it needs re-timing, which the transcode bridge does.
	if ev := plan.SIPDTMF; ev.PT != 0 {
		if pt, ok := c.webPT("telephone-event", ev.Clock); ok {
			so.PTMap[pt] = ev.PT
			wo.PTMap[ev.PT] = pt
		}
	}
	return media.NewForwarder(so).Stage(c.sipWriterFor(plan)), media.NewForwarder(wo).Stage(c.webRW()), nil, nil
}

// newBridge makes the Opus bridge for plan, counting on from prev's
// counters if there was one.
func (c *Call) newBridge(plan mediaPlan, ptime int, prev *transcode.Bridge) (*transcode.Bridge, error) {
	opusPT, _ := c.webPT("opus", 48000)
	webDTMF, _ := c.webPT("telephone-event", 48000)
	tc := c.r.cfg.Transcode
	newBridge := transcode.NewBridge
	if prev != nil {
		newBridge = prev.Successor
	}
	b, err := newBridge(transcode.Options{
		OpusPT:         opusPT,
		WebRTCDTMFPT:   webDTMF,
		SIPCodec:       strings.ToUpper(plan.SIPCodec.Name),
		SIPPT:          plan.SIPCodec.PT,
		SIPDTMFPT:      plan.SIPDTMF.PT,
		PtimeMs:        ptime,
		OpusComplexity: tc.OpusComplexity,
		OpusBitrate:    tc.OpusBitrate,
		OpusPacketLoss: tc.OpusPacketLoss,
		OpusFEC:        tc.OpusFEC,
		OpusDTX:        tc.OpusDTX,
	})
	if err != nil {
		return nil, fmt.Errorf("bridge for %s: %w", plan.SIPCodec.Name, err)
	}
	return b, nil
}

// startForwarding starts both directions with plan's stages.
func (c *Call) startForwarding(plan mediaPlan, ptime int) error {
	toSIP, toWeb, b, err := c.stages(plan, ptime, nil)
	if err != nil {
		return err
	}
	m := &activeMedia{plan: plan, toSIP: media.NewPath(toSIP), toWeb: media.NewPath(toWeb), bridge: b, toWebDone: make(chan struct{})}
	c.active.Store(m)
	c.run(func() error { return m.toSIP.Run(c.webRW()) })
	c.runToWeb(m.toWeb, m.toWebDone)
	return nil
}

// runToWeb runs the trunk → browser path on the SIP leg's reader, closing
// done when it returns.
func (c *Call) runToWeb(p *media.Path, done chan struct{}) {
	c.run(func() error {
		defer close(done)
		return p.Run(c.sipReader())
	})
}

// followTrunkOffer applies a trunk's mid-call offer to the media: a new
// codec or new payload types re-plumb both directions (see replan for what
// is supported). An error means the offer cannot be followed and nothing
// changed. The caller holds c.mid.mu, which serialises changes.
func (c *Call) followTrunkOffer(offer sdp.Audio) error {
	cur := c.active.Load()
	if cur == nil || cur.toSIP == nil {
		// No forwarding yet (an UPDATE before the answer): the codec of
		// the setup must stay.
		if cur == nil {
			return fmt.Errorf("offer before the media is settled: %w", errNoCommonCodec)
		}
		if _, ok := offer.Find(cur.plan.SIPCodec.Name); !ok {
			return fmt.Errorf("codec change before the media is up: %w", errNoCommonCodec)
		}
		return nil
	}
	if cur.plan.Mode == ModeE2E {
		return e2eFollow(cur.plan, offer) // nothing to re-plumb
	}
	c.r.mu.Lock() // a transfer may change the route
	route := c.route
	c.r.mu.Unlock()
	next, err := replan(route.MediaMode, route.Codecs, cur.plan, offer)
	if err != nil {
		return err
	}
	if samePlumbing(next, cur.plan) {
		return nil // a refresh, hold or move: the media path stays as it is
	}
	toSIP, toWeb, b, err := c.stages(next, sipPtime(offer, route), cur.bridge)
	if err != nil {
		return err
	}
	m := &activeMedia{plan: next, toSIP: cur.toSIP, toWeb: cur.toWeb, bridge: cur.bridge, toWebDone: cur.toWebDone}
	if b != nil {
		m.bridge = b
	}
	// The plan first: DTMF from INFO is injected with its payload type.
	c.active.Store(m)
	m.toSIP.Switch(toSIP)
	m.toWeb.Switch(toWeb)
	c.log.Info("trunk changed media", "mode", next.Mode, "sip_codec", next.SIPCodec.Name, "sip_pt", next.SIPCodec.PT,
		"sip_dtmf_pt", next.SIPDTMF.PT, "webrtc_codec", next.BrowserCodec,
		"was_mode", cur.plan.Mode, "was_sip_codec", cur.plan.SIPCodec.Name)
	return nil
}

// sipCodecList is what the relay's SDP towards the trunk carries for plan.
func sipCodecList(plan mediaPlan) []sdp.Codec {
	codecs := []sdp.Codec{plan.SIPCodec}
	if plan.SIPDTMF.PT != 0 {
		codecs = append(codecs, plan.SIPDTMF)
	}
	return codecs
}

// setCodecs replaces the payload types of an SDP's first audio m-line,
// with their rtpmap and fmtp lines, by codecs; the rest of the SDP stays.
func setCodecs(body string, codecs []sdp.Codec) string {
	var pts, attrs []string
	for _, c := range codecs {
		pts = append(pts, strconv.Itoa(int(c.PT)))
		rtpmap := fmt.Sprintf("a=rtpmap:%d %s/%d", c.PT, c.Name, c.Clock)
		if c.Channels > 1 {
			rtpmap += "/" + strconv.Itoa(c.Channels)
		}
		attrs = append(attrs, rtpmap)
		if c.Fmtp != "" {
			attrs = append(attrs, fmt.Sprintf("a=fmtp:%d %s", c.PT, c.Fmtp))
		}
	}
	var out []string
	inAudio, placed := false, false
	for _, l := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n") {
		if l == "" {
			continue
		}
		switch {
		case strings.HasPrefix(l, "m="):
			if inAudio && !placed {
				out, placed = append(out, attrs...), true
			}
			inAudio = !placed && strings.HasPrefix(l, "m=audio ")
			if f := strings.Fields(l); inAudio && len(f) >= 3 {
				l = strings.Join(append(f[:3:3], pts...), " ")
			}
		case inAudio && (strings.HasPrefix(l, "a=rtpmap:") || strings.HasPrefix(l, "a=fmtp:")):
			continue
		case inAudio && !placed && strings.HasPrefix(l, "a="):
			out, placed = append(out, attrs...), true
		}
		out = append(out, l)
	}
	if inAudio && !placed {
		out = append(out, attrs...)
	}
	return strings.Join(out, "\r\n") + "\r\n"
}
