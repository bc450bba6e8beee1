// Package callmedia owns the media of a browser↔trunk call between its
// two legs: one media.Path per direction running the stage of the call's
// media plan (forwarding, G.711 law conversion, an Opus transcode bridge,
// or, end to end, DTLS and SRTP passed unchanged), re-plumbed when the
// trunk changes codec mid-call or a transfer brings a new trunk leg or
// browser leg; DTMF between the legs (INFO played to the browser, a
// browser's telephone-events sent as INFO to a trunk with dtmf: info);
// and what the legs moved, for the relay's counters.
//
// A Media knows its call only through Legs: the trunk's current route
// and RTP leg, and its dialog for INFO. What the plan is, is
// signaling/mediaplan's decision; the Media carries it out.
//
// A trunk may change codec in the middle of a call (a re-INVITE or UPDATE
// whose offer drops the codec negotiated at setup, or renumbers it or
// telephone-event). The relay follows, as a carrier's media relay does,
// without renegotiating the browser leg: the browser keeps its codec
// (mediaplan.Replan) and the relay re-plumbs what joins the two legs. Each
// direction of a call is one media.Path, attached to its source leg for as
// long as the call lasts, running the current media.Stage; a change builds fresh stages
// for the new plan and switches both paths to them, between two packets and
// without touching a leg. The new stages carry on the old ones' outgoing
// streams (SSRC, sequence numbers, timestamps), so neither far end sees a
// new stream.
package callmedia

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/dtmf"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
)

// Legs is what a call's media needs of the call's trunk side; a transfer
// may replace the trunk leg at any time, so each is looked up when used.
type Legs interface {
	// Trunk is the trunk leg's route and RTP leg, read together.
	Trunk() (*config.Trunk, *media.RTPLeg)
	// SendInfo sends a DTMF digit as INFO on the trunk's dialog.
	SendInfo(digit byte, dur time.Duration) error
}

// Options configure a call's Media.
type Options struct {
	Legs Legs
	Log  *slog.Logger
	// Transcode is the Opus encoder's settings for a transcoded call.
	Transcode config.Transcode
	// OnDrop counts a packet a stage dropped, by reason.
	OnDrop func(reason string)
}

// Media is the media of one call. Its methods are safe from any
// goroutine, except that Start, StartOpaque, Follow and SwapTrunk, which
// change the plumbing, are serialised by the call's signalling.
type Media struct {
	legs      Legs
	log       *slog.Logger
	transcode config.Transcode
	onDrop    func(reason string)

	active atomic.Pointer[active] // plan and forwarding, replaced when the trunk changes codec
	web    webIO
	// The trunk → browser direction reads the trunk's RTP leg through an
	// injector that plays DTMF from INFO.
	inj     atomic.Pointer[dtmf.Injector]
	injOnce sync.Once
	wg      sync.WaitGroup // the paths, until their legs stop serving them

	counted    media.Tally // packets and bytes already in the relay's counters
	firstMedia atomic.Bool // the time to first media observed
}

// active is the call's media as last settled: replaced as a whole,
// atomically, when the trunk changes codec, so any goroutine can read it.
type active struct {
	plan mediaplan.Plan
	// The two directions; nil until forwarding starts.
	toSIP, toWeb *media.Path
	// bridge is the last Opus bridge the call used, nil if none; its
	// Stats count those of the bridges before it (transcode.Successor).
	bridge *transcode.Bridge
	// toWebDone is closed when toWeb's read loop returns (its SIP leg
	// closed, or paused for a new one: SwapTrunk).
	toWebDone chan struct{}
}

// New is the media of a call, with no plan and no browser leg yet.
func New(o Options) *Media {
	return &Media{legs: o.Legs, log: o.Log, transcode: o.Transcode, onDrop: o.OnDrop}
}

// Settle records plan as the call's before its forwarding starts.
func (m *Media) Settle(plan mediaplan.Plan) { m.active.Store(&active{plan: plan}) }

// Settled reports whether the call has a media plan.
func (m *Media) Settled() bool { return m.active.Load() != nil }

// Plan is the call's media plan; zero before the media is settled.
func (m *Media) Plan() mediaplan.Plan {
	if a := m.active.Load(); a != nil {
		return a.plan
	}
	return mediaplan.Plan{}
}

// Started reports whether the call's legs exist and forward (Start or
// StartOpaque has run), so that its legs may be used from any goroutine.
func (m *Media) Started() bool {
	a := m.active.Load()
	return a != nil && a.toSIP != nil
}

// Bridge is the last Opus bridge the call used, nil if none; its Stats
// count those of the bridges before it.
func (m *Media) Bridge() *transcode.Bridge {
	if a := m.active.Load(); a != nil {
		return a.bridge
	}
	return nil
}

// Wait waits until both directions have stopped, once the legs are
// closed.
func (m *Media) Wait() { m.wg.Wait() }

// Ptime is the packetisation towards the trunk: its SDP's, else the
// trunk's configured one.
func Ptime(a sdp.Audio, route *config.Trunk) int {
	if a.Ptime != 0 {
		return a.Ptime
	}
	return route.Ptime
}

// Start starts both directions with plan's stages, ptime the
// packetisation towards the trunk.
func (m *Media) Start(plan mediaplan.Plan, ptime int) error {
	toSIP, toWeb, b, err := m.stages(plan, ptime, nil)
	if err != nil {
		return err
	}
	a := &active{plan: plan, toSIP: media.NewPath(toSIP), toWeb: media.NewPath(toWeb), bridge: b, toWebDone: make(chan struct{})}
	m.active.Store(a)
	m.start(a.toSIP, &m.web, nil)
	m.runToWeb(a.toWeb, a.toWebDone)
	return nil
}

// StartOpaque joins the legs of an end-to-end call: each direction writes
// what it reads unchanged.
func (m *Media) StartOpaque(plan mediaplan.Plan) {
	_, sip := m.legs.Trunk()
	a := &active{
		plan:      plan,
		toSIP:     media.NewPath(media.NewOpaqueStage(sip, m.onDrop)),
		toWeb:     media.NewPath(media.NewOpaqueStage(&m.web, m.onDrop)),
		toWebDone: make(chan struct{}),
	}
	m.active.Store(a)
	m.start(a.toSIP, &m.web, nil)
	m.start(a.toWeb, sip, a.toWebDone) // no DTMF injection: the relay cannot write into the stream
}

// start runs p from from until a leg closes (or, for the trunk's leg,
// pauses for a transfer), then closes stopped if it is not nil. The legs
// deliver to p on their media loops: the call keeps no goroutine.
func (m *Media) start(p *media.Path, from media.RTPReader, stopped chan struct{}) {
	m.wg.Add(1)
	p.Start(from, func(error) {
		if stopped != nil {
			close(stopped)
		}
		m.wg.Done()
	})
}

// runToWeb runs the trunk → browser path on the SIP leg's reader, closing
// done when it stops.
func (m *Media) runToWeb(p *media.Path, done chan struct{}) {
	m.start(p, m.sipReader(), done)
}

// stages builds the processing of both directions for plan: Forwarders
// where the legs share the codec (converting G.711 laws on the way where
// they differ only in that), else an Opus bridge, which it returns too (the
// successor of prev, if the call had one). Whether the trunk's mode allows
// the plan was settled by mediaplan.Decide, mediaplan.DecideInbound or
// mediaplan.Replan.
func (m *Media) stages(plan mediaplan.Plan, ptime int, prev *transcode.Bridge) (toSIP, toWeb media.Stage, b *transcode.Bridge, err error) {
	if mediaplan.JoinFor(mediaplan.ModeAuto, plan.BrowserCodec, plan.SIPCodec.Name) == mediaplan.JoinTranscode {
		b, err := m.newBridge(plan, ptime, prev)
		if err != nil {
			return nil, nil, nil, err
		}
		return b.ToSIPStage(m.sipWriterFor(plan)), b.ToWebRTCStage(&m.web), b, nil
	}
	so := media.ForwarderOptions{PTMap: map[uint8]uint8{}, ClockRate: plan.SIPCodec.Clock, OnDrop: m.onDrop}
	wo := media.ForwarderOptions{PTMap: map[uint8]uint8{}, ClockRate: plan.SIPCodec.Clock, OnDrop: m.onDrop}
	if pt, ok := m.webPT(plan.BrowserCodec, 0); ok {
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
		if pt, ok := m.webPT("telephone-event", ev.Clock); ok {
			so.PTMap[pt] = ev.PT
			wo.PTMap[ev.PT] = pt
		}
	}
	return media.NewForwarder(so).Stage(m.sipWriterFor(plan)), media.NewForwarder(wo).Stage(&m.web), nil, nil
}

// newBridge makes the Opus bridge for plan, counting on from prev's
// counters if there was one.
func (m *Media) newBridge(plan mediaplan.Plan, ptime int, prev *transcode.Bridge) (*transcode.Bridge, error) {
	opusPT, _ := m.webPT("opus", 48000)
	webDTMF, _ := m.webPT("telephone-event", 48000)
	tc := m.transcode
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

// webPT returns the browser's payload type for a codec of our answer.
func (m *Media) webPT(name string, clock uint32) (uint8, bool) {
	for _, x := range m.Web().Audio.Codecs {
		if x.Is(name) && (clock == 0 || x.Clock == clock) {
			return x.PT, true
		}
	}
	return 0, false
}

// Follow applies a trunk's mid-call offer to the media: a new codec or
// new payload types re-plumb both directions (mediaplan.Replan says what
// is supported). An error means the offer cannot be followed and nothing
// changed. The call's signalling serialises changes.
func (m *Media) Follow(offer sdp.Audio) error {
	cur := m.active.Load()
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
	route, _ := m.legs.Trunk() // a transfer may change the route
	next, err := mediaplan.Replan(route.MediaMode, route.Codecs, cur.plan, offer)
	if err != nil {
		return err
	}
	if mediaplan.SamePlumbing(next, cur.plan) {
		return nil // a refresh, hold or move: the media path stays as it is
	}
	toSIP, toWeb, b, err := m.stages(next, Ptime(offer, route), cur.bridge)
	if err != nil {
		return err
	}
	a := &active{plan: next, toSIP: cur.toSIP, toWeb: cur.toWeb, bridge: cur.bridge, toWebDone: cur.toWebDone}
	if b != nil {
		a.bridge = b
	}
	// The plan first: DTMF from INFO is injected with its payload type.
	m.active.Store(a)
	a.toSIP.Switch(toSIP)
	a.toWeb.Switch(toWeb)
	m.log.Info("trunk changed media", "mode", next.Mode, "sip_codec", next.SIPCodec.Name, "sip_pt", next.SIPCodec.PT,
		"sip_dtmf_pt", next.SIPDTMF.PT, "webrtc_codec", next.BrowserCodec,
		"was_mode", cur.plan.Mode, "was_sip_codec", cur.plan.SIPCodec.Name)
	return nil
}

// SwapTrunk moves both directions from the trunk's RTP leg old to rtp,
// a new trunk leg (already the call's, as Legs reports it) that settled
// codec and dtmf at packetisation ptime, without a new stream towards the
// browser. It reports false, changing nothing, when the media has not
// started.
func (m *Media) SwapTrunk(old, rtp *media.RTPLeg, codec, dtmfEvent sdp.Codec, ptime int) bool {
	cur := m.active.Load()
	if cur == nil || cur.toSIP == nil {
		return false
	}
	// The browser-bound loop reads the old leg: stop it there and run it on
	// the new one with the stage it had, then switch both directions to
	// stages built for the new leg (the browser-bound one carries on its
	// stream; the trunk-bound one writes to the new leg).
	_ = old.PauseReads()
	<-cur.toWebDone
	m.injOnce.Do(func() {})
	m.inj.Store(dtmf.NewInjector(rtp))
	plan := cur.plan
	plan.SIPCodec, plan.SIPDTMF = codec, dtmfEvent
	a := &active{plan: plan, toSIP: cur.toSIP, toWeb: cur.toWeb, bridge: cur.bridge, toWebDone: make(chan struct{})}
	m.runToWeb(a.toWeb, a.toWebDone)
	toSIP, toWeb, b, err := m.stages(plan, ptime, cur.bridge)
	if err != nil {
		// The codec is the one the call had, so the stages were built
		// before; keep forwarding what we can.
		m.log.Warn("media for the transfer target", "err", err)
		m.active.Store(a)
		return true
	}
	if b != nil {
		a.bridge = b
	}
	m.active.Store(a)
	a.toSIP.Switch(toSIP)
	a.toWeb.Switch(toWeb)
	return true
}
