package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/callmedia"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/ngnode"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
	"github.com/mediarelay/mediarelay/signaling/sipsrtp"
)

// Call is one relayed call: a browser dialog and a trunk dialog (sipleg.Legs),
// the browser's WebRTC leg, and the forwarding between it and the trunk's
// RTP leg. The Call decides what crosses from one leg to the other; what
// concerns one dialog alone is the leg's.
type Call struct {
	r   *Relay
	id  string
	log *slog.Logger
	// browser and trunk are the call's SIP dialogs. On a call from a
	// browser the relay is the browser's UAS and the trunk's UAC; on a call
	// into browsers the other way round. A transfer may put a new leg in
	// place of either, under both c.mid.mu and the lock of r.calls (read them under
	// either, or with legNow); the trunk leg holds the RTP leg.
	browser, trunk *sipleg.Leg
	from, to       string
	// route is trunk.route, replaced with the leg by replaceLeg; kept
	// here for the call's set-up and labels.
	route     *config.Trunk
	direction string
	// user is the authenticated browser user of a call from a browser
	// ("" for anonymous and echo calls); userHeld says it holds one of
	// the user's sip.user_max_calls slots until it is removed from the relay's calls.
	user     string
	userHeld bool
	// wsSource is the WebSocket peer a browser's call came over (its
	// connection then counts as busy to the idle reaper).
	wsSource string

	browserOffer string
	offered      []sdp.Codec
	answerSDP    string
	// media is what runs between the browser's WebRTC leg and the trunk's
	// RTP leg: the plan, its forwarding, DTMF.
	media   *callmedia.Media
	mediaUp bool
	watched atomic.Bool // the relay's call watcher checks it (watch)
	// srtp is the trunk leg's SRTP set-up (SDES or DTLS-SRTP); sec what
	// it settled, replaced by a transfer's new trunk leg, and the leg's
	// authentication failures.
	srtp *sipsrtp.Negotiation
	sec  sipsrtp.State

	// e2e: DTLS-SRTP end to end (media_mode e2e); cleared when the far end
	// could not and the trunk lets the relay terminate instead.
	e2e bool

	start time.Time
	// answered is when the call was answered, nil until then; read it
	// with answerTime (the call API, the watcher and an ng delete read it
	// while the call's signalling sets it).
	answered atomic.Pointer[time.Time]
	// endedBy, when set, is the operator who hung the call up.
	endedBy atomic.Pointer[string]

	// A trunk's offer on a call into browsers (none if its INVITE had no
	// SDP: sipleg.Leg.ExpectAckAnswer).
	trunkOffer sdp.Audio
	mid        midCallState
	// handedOff: the trunk leg went on in a join; guarded by the lock of r.calls.
	handedOff bool
	// ngs is the ng session of a call a SIP proxy set up.
	ngs *ngnode.Session
	// sessionExpired ends the call when its trunk leg's session timer
	// runs out.
	sessionExpired func()

	// abort stops a call that is still being set up (cancels the INVITE).
	abort context.CancelCauseFunc
	// browserRejected is set when the browser got a final failure although
	// the trunk answered: its dialog never existed, so no BYE goes there.
	browserRejected atomic.Bool
	// stopWhy says why the INVITE was cancelled, when the relay did it.
	stopWhy atomic.Pointer[error]

	once  sync.Once
	ended chan struct{}
	cause string
	code  int
}

// newCall is a call in direction through route, with empty legs and a
// fresh id, not yet admitted.
func (r *Relay) newCall(route *config.Trunk, direction string) *Call {
	c := &Call{r: r, id: newCallID(), route: route, direction: direction, start: time.Now(),
		ended: make(chan struct{}), browser: sipleg.New(nil), trunk: sipleg.New(route)}
	c.sessionExpired = func() { c.hangup(cdr.CauseSessionExpired, 0, "") }
	c.log = r.log.With("call", c.id)
	if route != nil {
		c.log = r.log.With("call", c.id, "trunk", route.Name)
	}
	c.srtp = r.srtpFor(route, c.log, &c.sec)
	c.media = callmedia.New(callmedia.Options{Legs: trunkSide{c}, Log: c.log, Transcode: r.cfg.Transcode, OnDrop: r.m.CountDrop})
	c.trunk.AdoptSessionTimer(c.log, c.sessionExpired)
	return c
}

// srtpFor is the SRTP set-up of a leg towards route, logging to log and
// settling state (nil: the leg's own, not a call's).
func (r *Relay) srtpFor(route *config.Trunk, log *slog.Logger, state *sipsrtp.State) *sipsrtp.Negotiation {
	return sipsrtp.New(route, sipsrtp.Options{
		Log:         log,
		DTLSTimeout: r.cfg.SIP.InviteTimeout,
		OnDTLSFailure: func(cause string) {
			r.m.DTLSFailures.WithLabelValues(metrics.LegSIP, cause).Inc()
		},
		State: state,
	})
}

// admit registers a new call with the relay under its first dialog.
func (r *Relay) admit(c *Call, dialogID string) {
	r.calls.Add(c.id, c, c.wsSource)
	r.calls.Index(dialogID, c)
}

// The call's legs ----------------------------------------------------------
//
// A transfer may replace either sipleg.Leg, the trunk's RTP leg with it, or
// the browser's WebRTC leg: code outside the call's signalling reaches
// them through these.

// Leg is the call's dialog on side s; c.mid.mu or the lock of the relay's
// calls is held (a transfer replaces a leg under both).
func (c *Call) Leg(s side) *sipleg.Leg {
	if s == sideTrunk {
		return c.trunk
	}
	return c.browser
}

// legNow is Leg for goroutines that hold neither lock.
func (c *Call) legNow(s side) *sipleg.Leg {
	c.r.calls.Lock()
	defer c.r.calls.Unlock()
	return c.Leg(s)
}

// trunkSide is the call's trunk side as its media sees it
// (callmedia.Legs).
type trunkSide struct{ c *Call }

func (t trunkSide) Trunk() (*config.Trunk, *media.RTPLeg) {
	t.c.r.calls.Lock() // a transfer may change the route and the leg
	defer t.c.r.calls.Unlock()
	return t.c.route, t.c.trunk.RTP()
}

func (t trunkSide) SendInfo(digit byte, dur time.Duration) error {
	return t.c.legNow(sideTrunk).SendInfo(digit, dur)
}

// sipLeg is the call's SIP media leg; a transfer from the trunk side may
// replace it (swapSIPLeg), so goroutines other than the call's signalling
// read it here.
func (c *Call) sipLeg() *media.RTPLeg {
	c.r.calls.Lock()
	defer c.r.calls.Unlock()
	return c.trunk.RTP()
}

// rejectInvite answers the INVITE of dss with a final failure and ends the
// call with cause.
func (c *Call) rejectInvite(dss *sipgo.DialogServerSession, code int, reason, cause string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(dss.InviteRequest, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = dss.WriteResponse(res)
	c.r.m.CountSetupFailure(code)
	c.hangup(cause, code, reason)
}

// openRTPLeg allocates the call's SIP-side media ports; when the range is
// exhausted it rejects the call with 503 and Retry-After and reports false.
func (c *Call) openRTPLeg(fail func(int, string, string, ...sip.Header)) bool {
	rtp, err := c.r.openRTP(c.log, c.onRTPDrop)
	if err != nil {
		fail(503, "No Media Ports", cdr.CauseError, sip.NewHeader("Retry-After", "5"))
		return false
	}
	c.trunk.SetRTP(rtp)
	return true
}

// openRTP allocates a SIP leg's media ports; its drops go to onDrop.
func (r *Relay) openRTP(log *slog.Logger, onDrop func(reason string)) (*media.RTPLeg, error) {
	rtp, err := media.NewRTPLeg(media.RTPLegOptions{
		Ports:    r.ports,
		Latching: r.cfg.Media.Latching,
		OnDrop:   onDrop,
		Logger:   log,
	})
	if err != nil {
		log.Warn("no media port", "err", err)
		return nil, fmt.Errorf("rtp leg: %w", err)
	}
	return rtp, nil
}

// startInboundSRTP keys the call's RTP leg with the keys of a trunk's
// offer (nil: none), before it has a remote address; when that fails it
// rejects the call with 488 and reports false.
func (c *Call) startInboundSRTP(k *mediaplan.InboundKeys, fail func(int, string, string, ...sip.Header)) bool {
	if err := c.srtp.Inbound(k, c.trunk.RTP()); err != nil {
		c.log.Warn("srtp setup failed", "err", err)
		fail(488, "Not Acceptable Here", cdr.CauseSRTPRequired)
		return false
	}
	return true
}

// onRTPDrop counts a dropped packet of the call's SIP leg.
func (c *Call) onRTPDrop(reason string) {
	c.r.m.CountDrop(reason)
	c.sec.CountDrop(reason)
}

func newCallID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// setupMedia builds the WebRTC answer and starts forwarding for the trunk's
// answer (from a 183 or the 200). It runs once; later answers only move the
// RTP destination.
func (c *Call) setupMedia(answer sdp.Audio) error {
	if err := usableConnection(answer); err != nil {
		return err
	}
	if c.mediaUp {
		c.trunk.SetRemote(answer)
		return nil
	}
	if c.e2e {
		fallback, err := c.setupE2E(answer)
		if err != nil || !fallback {
			return err
		}
		c.e2e = false // terminated from here on
	}
	mode := c.route.MediaMode
	if mode == mediaplan.ModeE2E {
		mode = mediaplan.ModePassthrough // an e2e trunk's fallback never transcodes
	}
	browserAudio := mustAudio(c.browserOffer)
	plan, err := mediaplan.Decide(mode, browserAudio, answer, c.offered)
	if err != nil {
		return err
	}
	c.media.Settle(plan)
	// Keys go in before the leg has a remote (and so before it reads).
	if err := c.srtp.Answer(answer, c.trunk.RTP()); err != nil {
		return err
	}
	web, answerSDP, err := c.r.webrtc.Answer(c.browserOffer, plan.BrowserCodec)
	c.log.Debug("webrtc answer", "sdp", answerSDP)
	if err != nil {
		return err
	}
	c.media.SetWeb(web)
	c.answerSDP = answerSDP
	c.trunk.SetRemote(answer)
	c.mediaUp = true

	if err := c.media.Start(plan, callmedia.Ptime(answer, c.route)); err != nil {
		return err
	}
	// Counted once, with the mode of the setup, even if the trunk changes
	// codec later (the CDR has the final mode).
	c.r.m.TranscodedCalls.WithLabelValues(plan.Mode, c.trunkName()).Inc()
	c.log.Info("media negotiated", "mode", plan.Mode, "sip_codec", plan.SIPCodec.Name, "webrtc_codec", plan.BrowserCodec)
	return nil
}

// setupCause maps an error from setting up the trunk's media to a CDR cause.
func setupCause(err error) string {
	switch {
	case errors.Is(err, mediaplan.ErrSRTPRefused), errors.Is(err, mediaplan.ErrSRTPBadAnswer), errors.Is(err, mediaplan.ErrSDESInsecure):
		return cdr.CauseSRTPRequired
	case errors.Is(err, sipsrtp.ErrDTLS):
		return cdr.CauseDTLSFailed
	case errors.Is(err, mediaplan.ErrE2ENoDTLS):
		return cdr.CauseE2ENoDTLS
	}
	return cdr.CauseNoCodec
}

// errNoConnection is an SDP whose audio stream has no c= address (media or
// session level): nowhere to send media; the call gets 488.
var errNoConnection = errors.New("sdp: audio stream without a connection address (c=)")

// usableConnection checks that a peer's SDP says where its media goes; a
// rejected stream (port 0) needs no address.
func usableConnection(a sdp.Audio) error {
	if a.Port != 0 && !a.Addr.IsValid() {
		return errNoConnection
	}
	return nil
}

func mustAudio(offer string) sdp.Audio {
	_, a, _ := sdp.Parse([]byte(offer))
	return a
}

// watch hands the call, once its media is up, to the relay's call
// watcher (watchCalls), which hangs it up when media stops, the WebRTC
// leg fails or the trunk's SRTP keeps failing authentication.
func (c *Call) watch() { c.watched.Store(true) }

// watchCalls runs every watched call's once-a-second check until done
// closes. One goroutine and one ticker serve all calls: a goroutine and a
// ticker per call cost a few kilobytes of stack each, and a wake-up per
// call every second.
func (r *Relay) watchCalls(done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			for _, c := range r.calls.List() {
				if c.watched.Load() {
					c.check(now)
				}
			}
		}
	}
}

// check is one look at a watched call. A call it ends is hung up on a
// goroutine of its own, so that one hang-up does not hold up the others'
// checks.
func (c *Call) check(now time.Time) {
	select {
	case <-c.ended:
		c.watched.Store(false)
		return
	default:
	}
	end := func(cause string) {
		c.watched.Store(false)
		go c.hangup(cause, 0, "")
	}
	select {
	case <-c.media.Web().Failed():
		c.r.m.CountLegFailure(c.media.Web().FailCause())
		end(cdr.CauseICEFailed)
		return
	default:
	}
	c.observeFirstMedia()
	if c.sec.AuthFailing(c.sipLeg()) {
		c.log.Warn("trunk's SRTP keeps failing authentication; ending the call")
		end(cdr.CauseSRTPAuth)
		return
	}
	if c.mid.hold.Silent(now, c.answerTime(), c.r.cfg.Media.Timeout, c.media.Web(), c.sipLeg()) {
		end(cdr.CauseMediaTimeout)
	}
}

// onAck takes the ACK of a 2xx the relay sent on side s; on a call into
// browsers whose INVITE had no offer, the trunk's ACK carries the answer.
func (c *Call) onAck(s side, req *sip.Request, tx sip.ServerTransaction) {
	if l := c.legNow(s); l.ReadAck(req, tx) && s == sideTrunk {
		c.trunkAck(l, req)
	}
}

// onBye ends the call when either side hangs up.
func (c *Call) onBye(s side, req *sip.Request, tx sip.ServerTransaction) {
	c.legNow(s).ReadBye(req, tx)
	if s == sideBrowser {
		c.hangup(cdr.CauseNormalBrowser, 0, "")
	} else {
		c.hangup(cdr.CauseNormalTrunk, 0, "")
	}
}

// hangup ends the call once: BYE to each established leg that did not hang
// up itself, legs closed, the CDR written.
func (c *Call) hangup(cause string, code int, reason string) {
	c.once.Do(func() {
		c.cause, c.code = cause, code
		close(c.ended)
		if c.abort != nil {
			c.abort(errors.New(cause))
		}
		var wg sync.WaitGroup
		bye := func(f func(context.Context) error, leg string) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := f(ctx); err != nil {
					c.log.Debug("bye failed", "leg", leg, "err", err)
				}
			}()
		}
		// A transfer may hand the trunk leg to a join at the same time:
		// read it under the lock that hand-off takes.
		c.r.calls.Lock()
		trunk, handedOff := c.trunk, c.handedOff
		c.r.calls.Unlock()
		if !handedOff {
			trunk.StopSessionTimer()
		}
		if !c.answerTime().IsZero() {
			if cause != cdr.CauseNormalTrunk && !handedOff && trunk.Exists() {
				bye(trunk.Bye, "trunk")
			}
			if browser := c.legNow(sideBrowser); cause != cdr.CauseNormalBrowser && browser.Exists() && !c.browserRejected.Load() {
				bye(browser.Bye, "browser")
			}
		}
		wg.Wait()
		c.closeMedia()
		c.finish()
	})
}

func (c *Call) closeMedia() {
	if web := c.media.Web(); web != nil {
		_ = web.Close()
	}
	c.r.calls.Lock()
	rtp, keep := c.trunk.RTP(), c.handedOff
	c.r.calls.Unlock()
	if rtp != nil && !keep {
		_ = rtp.Close()
	}
	c.media.Wait()
}

// cdrRecord is the call's CDR as far as its set-up goes.
func (c *Call) cdrRecord() cdr.Record {
	c.r.calls.Lock()
	to := c.to // an ng call's is set when it is answered
	c.r.calls.Unlock()
	rec := cdr.Record{
		CallID:        c.id,
		BrowserCallID: c.browser.CallID(),
		TrunkCallID:   c.trunk.CallID(),
		From:          c.from,
		To:            to,
		Direction:     c.direction,
		Start:         c.start,
		Answer:        c.answerTime(),
	}
	if c.route != nil {
		rec.Trunk = c.route.Name
	}
	return rec
}

// beginCDR writes the answered call's row, in progress until finish
// completes it: a relay killed mid-call still leaves a record.
func (c *Call) beginCDR() {
	if c.r.cdr == nil {
		return
	}
	rec := c.cdrRecord()
	rec.SIPCode = 200
	if c.media.Settled() {
		recordPlan(&rec, c.media.Plan())
	}
	if err := c.r.cdr.Begin(rec); err != nil {
		c.log.Error("cdr not begun", "err", err)
	}
}

// finish writes the CDR and forgets the call.
func (c *Call) finish() {
	end := time.Now()
	c.r.m.CountEnd(c.cause, c.trunkName())
	answered := c.answerTime()
	if !answered.IsZero() {
		c.r.m.Duration.WithLabelValues(c.trunkName(), c.direction).Observe(end.Sub(answered).Seconds())
	}
	rec := c.cdrRecord()
	rec.End, rec.EndCause, rec.SIPCode = end, c.cause, c.code
	rec.EndedBy = whoEnded(c.cause, c.endedBy.Load())
	if rec.SIPCode == 0 && !answered.IsZero() {
		rec.SIPCode = 200
	}
	if c.mediaUp && c.media.Settled() {
		// The media as it ended: a trunk may have changed codec mid-call.
		recordPlan(&rec, c.media.Plan())
		web, rtp := c.media.Web(), c.sipLeg()
		ws, rs := web.Stats(), rtp.Stats()
		recordLegs(&rec, rs, ws, rtp.Transport(), web.Transport())
		c.r.m.CountTransports(rec.WebRTCTransport, rec.SIPTransport)
		c.observeFirstMedia()
		c.r.m.ObserveQuality(c.trunkName(), rec, rs, ws)
		if b := c.media.Bridge(); b != nil {
			st := b.Stats()
			rec.DTMFEvents = int(st.DTMFEventsToSIP + st.DTMFEventsToWebRTC)
			c.log.Info("transcoding stats", "to_sip_frames", st.ToSIPFrames, "to_webrtc_frames", st.ToWebRTCFrames,
				"plc", st.PLCFrames, "fec", st.FECFrames, "lost", st.LostPackets, "late", st.LatePackets,
				"dropped", st.DroppedPackets, "dtmf_to_sip", st.DTMFEventsToSIP, "dtmf_to_webrtc", st.DTMFEventsToWebRTC,
				"dtmf_dropped", st.DTMFDropped)
		}
		c.r.m.CountLegs(c.media.Moved())
	}
	// Forgotten once counted: a scrape that no longer sees the call sees
	// its end in the counters and histograms.
	c.r.calls.Remove(c.id, c.wsSource, func(c *Call) {
		if c.ngs != nil {
			c.r.ngNode.Forget(c.ngs)
		}
		if c.userHeld {
			c.r.limits.Release(c.user)
		}
	})
	if c.r.cdr != nil {
		if err := c.r.cdr.Write(rec); err != nil {
			c.log.Error("cdr not written", "err", err)
		}
	}
	c.log.Info("call ended", "cause", c.cause, "code", c.code, "duration", end.Sub(c.start).Round(time.Millisecond).String())
}

// recordPlan puts the media plan's mode and codecs in a call's CDR.
func recordPlan(rec *cdr.Record, plan mediaplan.Plan) {
	rec.Mode, rec.WebRTCCodec, rec.SIPCodec = plan.Mode, plan.BrowserCodec, plan.SIPCodec.Name
}

// recordLegs puts the media legs' counts, loss, jitter and transports in a
// CDR, and the MOS they make for rec.SIPCodec (set first): sip is the
// trunk's leg, web the browser's, or a join's second trunk leg. Calls and
// joins fill these fields alike.
func recordLegs(rec *cdr.Record, sip, web media.LegStats, sipTransport, webTransport string) {
	rec.SIPPacketsIn, rec.SIPPacketsOut = sip.PacketsIn, sip.PacketsOut
	rec.WebRTCPacketsIn, rec.WebRTCPacketsOut = web.PacketsIn, web.PacketsOut
	rec.SIPLoss, rec.WebRTCLoss = lossFraction(sip), lossFraction(web)
	rec.SIPJitterMs, rec.WebRTCJitterMs = sip.Jitter, web.Jitter
	rec.SIPTransport, rec.WebRTCTransport = sipTransport, webTransport
	rec.MOS = cdr.EstimateMOS(rec.SIPCodec, max(rec.SIPLoss, rec.WebRTCLoss), max(sip.Jitter, web.Jitter), 0)
}

// lossFraction is the fraction of the packets a leg expected that were lost.
func lossFraction(s media.LegStats) float64 {
	expected := int64(s.PacketsIn) + s.Lost
	if expected <= 0 || s.Lost <= 0 {
		return 0
	}
	return float64(s.Lost) / float64(expected)
}
