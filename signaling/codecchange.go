package signaling

import (
	"fmt"
	"strings"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
)

// A trunk may change codec in the middle of a call (a re-INVITE or UPDATE
// whose offer drops the codec negotiated at setup, or renumbers it or
// telephone-event). The relay follows, as a carrier's media relay does,
// without renegotiating the browser leg: the browser keeps its codec
// (mediaplan.Replan) and the relay re-plumbs what joins the two legs. Each
// direction of a call is one media.Path, a read loop that lives as long as
// the call, running the current media.Stage; a change builds fresh stages
// for the new plan and switches both paths to them, between two packets and
// without touching a leg. The new stages carry on the old ones' outgoing
// streams (SSRC, sequence numbers, timestamps), so neither far end sees a
// new stream.

// activeMedia is the call's media as last settled: replaced as a whole,
// atomically, when the trunk changes codec, so any goroutine can read it.
type activeMedia struct {
	plan mediaplan.Plan
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
func (c *Call) currentPlan() mediaplan.Plan {
	if m := c.active.Load(); m != nil {
		return m.plan
	}
	return mediaplan.Plan{}
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
// they differ only in that), else an Opus bridge, which it returns too (the
// successor of prev, if the call had one). Whether the trunk's mode allows
// the plan was settled by mediaplan.Decide, mediaplan.DecideInbound or
// mediaplan.Replan.
func (c *Call) stages(plan mediaplan.Plan, ptime int, prev *transcode.Bridge) (toSIP, toWeb media.Stage, b *transcode.Bridge, err error) {
	if mediaplan.JoinFor(mediaplan.ModeAuto, plan.BrowserCodec, plan.SIPCodec.Name) == mediaplan.JoinTranscode {
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
			// Only G.711 to G.711 gets here (mediaplan.JoinFor).
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
func (c *Call) newBridge(plan mediaplan.Plan, ptime int, prev *transcode.Bridge) (*transcode.Bridge, error) {
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
func (c *Call) startForwarding(plan mediaplan.Plan, ptime int) error {
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
// codec or new payload types re-plumb both directions (see mediaplan.Replan
// for what is supported). An error means the offer cannot be followed and
// nothing changed. The caller holds c.mid.mu, which serialises changes.
func (c *Call) followTrunkOffer(offer sdp.Audio) error {
	cur := c.active.Load()
	if cur == nil || cur.toSIP == nil {
		// No forwarding yet (an UPDATE before the answer): the codec of
		// the setup must stay.
		if cur == nil {
			return fmt.Errorf("offer before the media is settled: %w", mediaplan.ErrNoCommonCodec)
		}
		if _, ok := offer.Find(cur.plan.SIPCodec.Name); !ok {
			return fmt.Errorf("codec change before the media is up: %w", mediaplan.ErrNoCommonCodec)
		}
		return nil
	}
	if cur.plan.Mode == mediaplan.ModeE2E {
		return mediaplan.E2EFollow(cur.plan, offer) // nothing to re-plumb
	}
	c.r.mu.Lock() // a transfer may change the route
	route := c.route
	c.r.mu.Unlock()
	next, err := mediaplan.Replan(route.MediaMode, route.Codecs, cur.plan, offer)
	if err != nil {
		return err
	}
	if mediaplan.SamePlumbing(next, cur.plan) {
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
