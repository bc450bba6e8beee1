package signaling

import (
	"context"
	"slices"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/join"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// Transfers that leave two trunk legs talking (a join): the browser
// hands its trunk peer to a number routed to a trunk, or connects the
// trunk peers of two of its calls; and a trunk's INVITE with Replaces
// that takes over the trunk leg of a call.

// trunkParty is the number at the trunk end of the call.
func (c *Call) trunkParty() string {
	if c.direction == "outbound" {
		return c.to
	}
	return c.from
}

// handOff takes the trunk leg out of the call for a join. The call's
// forwarding stops reading it, and the call's hang-up (which the caller
// does next) leaves its dialog and port alone. It reports false when the
// call has ended or has no answered trunk leg.
func (c *Call) handOff() (*sipleg.Leg, bool) {
	r := c.r
	c.mid.mu.Lock() // serialised with offers and answers on the call
	defer c.mid.mu.Unlock()
	if c.answerTime().IsZero() || !c.mediaUp {
		return nil, false
	}
	leg := c.trunk
	if !leg.Exists() {
		return nil, false
	}
	plan := c.media.Plan()
	if !c.lockAlive() {
		return nil, false
	}
	r.calls.Unindex(leg.ID())
	c.handedOff = true
	r.calls.Unlock()
	leg.SetPeer(c.trunkParty(), plan.SIPCodec, plan.SIPDTMF)
	// The SDP the join goes on from: what the call last told the trunk.
	leg.SetSDP(c.localSDP(sideTrunk, c.browser.AskedDir()))
	leg.StopSessionTimer()
	_ = leg.RTP().PauseReads()
	return leg, true
}

// transferToTrunk performs a blind transfer the browser asked for to a
// number that routes to a trunk: the relay calls it with the trunk leg's
// codec and joins the two trunk legs.
func (c *Call) transferToTrunk(old sipleg.DialogRef, route *config.Trunk, user string) {
	old.NotifyRefer(c.log, "100 Trying", false)
	if c.sec.Outcome().Policy == mediaplan.SRTPDTLS {
		// The DTLS association belongs to the call; a join does not carry it.
		old.NotifyRefer(c.log, "488 Not Acceptable Here", true)
		return
	}
	ctx, cancel := untilEnded(c.ended, ringTimeout)
	defer cancel()
	plan := c.media.Plan()
	leg, status := c.r.dialTrunk(ctx, route, user, c.trunkParty(), plan.SIPCodec, plan.SIPDTMF, dialOptions{otherLaw: true})
	if leg == nil {
		c.log.Info("transfer failed", "target", user, "status", status)
		old.NotifyRefer(c.log, status, true)
		return
	}
	mine, ok := c.handOff()
	if !ok {
		leg.Drop()
		return
	}
	old.NotifyRefer(c.log, "200 OK", true)
	c.hangup(cdr.CauseTransferred, 0, "")
	c.log.Info("transferred by the browser to a trunk", "target", user, "trunk", route.Name)
	c.r.joins.Start(newCallID(), mine, leg)
}

// transferAttended connects the trunk peers of two of the browser's calls:
// this one and the one whose browser dialog rep names (RFC 5589 section 7).
func (c *Call) transferAttended(old sipleg.DialogRef, rep sipleg.Replaces) {
	old.NotifyRefer(c.log, "100 Trying", false)
	other := c.r.calls.ByReplaces(rep, sideBrowser)
	if other == nil || other == c || other.answerTime().IsZero() {
		old.NotifyRefer(c.log, "481 Call/Transaction Does Not Exist", true)
		return
	}
	if c.sec.Outcome().Policy == mediaplan.SRTPDTLS || other.sec.Outcome().Policy == mediaplan.SRTPDTLS {
		old.NotifyRefer(c.log, "488 Not Acceptable Here", true)
		return
	}
	mine, theirs := c.media.Plan().SIPCodec, other.media.Plan().SIPCodec
	if !mediaplan.Joinable(mine, theirs) {
		// A join converts G.711 laws but decodes nothing.
		c.log.Info("attended transfer between calls with different codecs refused",
			"codec", mine.Name, "other", theirs.Name)
		old.NotifyRefer(c.log, "488 Not Acceptable Here", true)
		return
	}
	b, ok := other.handOff()
	if !ok {
		old.NotifyRefer(c.log, "481 Call/Transaction Does Not Exist", true)
		return
	}
	a, ok := c.handOff()
	if !ok {
		// This call ended under us: the other trunk party has nobody to
		// talk to.
		other.hangup(cdr.CauseTransferred, 0, "")
		b.Drop()
		return
	}
	old.NotifyRefer(c.log, "200 OK", true)
	c.hangup(cdr.CauseTransferred, 0, "")
	other.hangup(cdr.CauseTransferred, 0, "")
	c.log.Info("attended transfer: trunk legs joined", "other_call", other.id)
	c.r.joins.Start(newCallID(), a, b)
}

// lockAlive takes the lock of the relay's calls unless the call has ended, and reports whether it
// did.
func (c *Call) lockAlive() bool {
	c.r.calls.Lock()
	select {
	case <-c.ended:
		c.r.calls.Unlock()
		return false
	default:
		return true
	}
}

// replaceLeg puts leg in place of the call's leg on side s (a transfer's
// new party) and files the call under the new dialog; c.mid.mu is held.
// It returns the old leg, or false when the call has ended.
func (c *Call) replaceLeg(s side, leg *sipleg.Leg) (*sipleg.Leg, bool) {
	if !c.lockAlive() {
		return nil, false
	}
	defer c.r.calls.Unlock()
	old := c.Leg(s)
	if s == sideTrunk {
		c.trunk, c.route = leg, leg.Route()
	} else {
		c.browser = leg
	}
	c.r.calls.Reindex(old.ID(), leg.ID(), c)
	return old, true
}

// joinHost is what the relay does for its joins (join.Host).
type joinHost struct{ r *Relay }

func (h joinHost) Contact(route *config.Trunk) sip.Header {
	return sip.HeaderClone(&h.r.trunkUA.forTrunk(route).ContactHDR)
}

func (h joinHost) Route(user string) *config.Trunk { return h.r.route(user) }

// Dial is dialTrunk for a transfer inside a join, rung until ended closes
// or ringTimeout.
func (h joinHost) Dial(ended <-chan struct{}, route *config.Trunk, user, fromUser string, codec, dtmf sdp.Codec, extra []sip.Header) (*sipleg.Leg, string) {
	ctx, cancel := untilEnded(ended, ringTimeout)
	defer cancel()
	return h.r.dialTrunk(ctx, route, user, fromUser, codec, dtmf, dialOptions{otherLaw: true, extra: extra})
}

func (h joinHost) CountDrop(reason string) { h.r.m.CountDrop(reason) }

// Ended counts the join's end and its legs' media, and writes its CDR
// with the legs' counts, loss, jitter and transports.
func (h joinHost) Ended(j *join.Join, rec cdr.Record) error {
	r := h.r
	legs := j.Legs()
	a, b := legs[0].RTP(), legs[1].RTP()
	r.m.CountEnd(rec.EndCause, rec.Trunk)
	recordLegs(&rec, a.Stats(), b.Stats(), a.Transport(), b.Transport())
	r.m.CountTransports("", rec.SIPTransport)
	r.m.CountTransports("", rec.WebRTCTransport)
	countJoinMedia(r.m, j)
	if r.cdr == nil {
		return nil
	}
	return r.cdr.Write(rec)
}

// dialOptions are dialTrunk's choices.
type dialOptions struct {
	otherLaw bool         // offer G.711's other law too: a join converts between them
	owner    *Call        // the call the leg is for, if not a join: its SRTP failures count there
	extra    []sip.Header // on the INVITE (Replaces)
}

// dialTrunk calls user through route with an offer of codec (and dtmf, if
// its PT is not 0) and returns the answered leg, not yet in a call or
// join; or nil and a status line for a NOTIFY.
func (r *Relay) dialTrunk(ctx context.Context, route *config.Trunk, user, fromUser string, codec, dtmf sdp.Codec, o dialOptions) (*sipleg.Leg, string) {
	log, onDrop := r.log.With("trunk", route.Name), r.m.CountDrop
	if o.owner != nil {
		log, onDrop = r.log.With("call", o.owner.id, "trunk", route.Name), o.owner.onRTPDrop
	}
	rtp, err := r.openRTP(log, onDrop)
	if err != nil {
		return nil, fmtStatus(503, "No Media Ports")
	}
	if route.SRTP == mediaplan.SRTPDTLS {
		// A transfer target is not dialled with DTLS-SRTP.
		_ = rtp.Close()
		return nil, "488 Not Acceptable Here"
	}
	// The peer's codec first; G.711's other law too if the trunk takes
	// it, since the join converts between them.
	codecs := []sdp.Codec{codec}
	for _, alt := range []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.SIPCodecs["pcma"]} {
		if o.otherLaw && !alt.Is(codec.Name) && mediaplan.Joinable(codec, alt) && mediaplan.HasCodec(route.Codecs, alt.Name) {
			codecs = append(codecs, alt)
		}
	}
	audio := codecs
	if dtmf.PT != 0 {
		codecs = append(codecs[:len(codecs):len(codecs)], dtmf)
	}
	offer := sdp.Offer{SessionID: uint64(time.Now().UnixNano()), Version: 1, Addr: r.mediaAddrFor(route.PeerAddr()),
		Port: int(rtp.LocalAddr().Port()), Codecs: codecs, Ptime: route.Ptime}
	srtp := r.srtpFor(route, log, nil)
	if err := srtp.Offer(&offer); err != nil {
		log.Warn("transfer target's SRTP policy cannot be met", "err", err)
		_ = rtp.Close()
		return nil, "488 Not Acceptable Here"
	}
	body := offer.Marshal()
	dcs, status := r.inviteTrunk(ctx, route, user, fromUser, body, o.extra...)
	if dcs == nil {
		_ = rtp.Close()
		return nil, status
	}
	leg := sipleg.New(route)
	leg.SetClient(dcs)
	leg.SetRTP(rtp)
	leg.SetSDP(string(body))
	answered := codec
	_, ans, err := sdp.Parse(dcs.InviteResponse.Body())
	if err == nil {
		err = mediaplan.ErrNoCommonCodec
		for _, a := range ans.Codecs {
			if i := slices.IndexFunc(audio, func(c sdp.Codec) bool { return c.Is(a.Name) }); i >= 0 {
				answered, err = audio[i], nil
				break
			}
		}
	}
	if err == nil {
		err = srtp.Answer(ans, rtp)
	}
	if err != nil {
		log.Info("transfer target's answer unusable", "err", err)
		leg.Drop()
		return nil, "488 Not Acceptable Here"
	}
	if _, ok := ans.DTMF(dtmf.Clock); !ok || dtmf.PT == 0 {
		dtmf = sdp.Codec{} // none offered, or the target does not take it
	}
	leg.SetPeer(user, answered, dtmf)
	leg.AnsweredSessionTimer(dcs.InviteResponse) // armed by the call or join that takes the leg
	leg.SetRemote(ans)
	leg.SetSecurity(sipleg.Security(srtp.Outcome()))
	return leg, ""
}

// replaceTrunkLeg answers a trunk's INVITE with Replaces naming the trunk
// leg of a call (RFC 3891): the new dialog takes that leg's place on the
// same media port and codec, and the old dialog gets BYE. It reports
// whether the INVITE was a replacement (and so has been answered).
func (r *Relay) replaceTrunkLeg(req *sip.Request, tx sip.ServerTransaction, route *config.Trunk) bool {
	h := req.GetHeader("Replaces")
	if h == nil {
		return false
	}
	fail := func(code int, reason, warning string) {
		hdrs := []sip.Header{}
		if warning != "" {
			hdrs = append(hdrs, sip.NewHeader("Warning", `399 mediarelay "`+warning+`"`))
		}
		sipleg.Respond(tx, req, code, reason, hdrs...)
		r.m.CountSetupFailure(code)
	}
	rep, ok := sipleg.ParseReplaces(h.Value())
	if !ok {
		fail(400, "Bad Request", "malformed Replaces")
		return true
	}
	c := r.calls.ByReplaces(rep, sideTrunk)
	if c == nil || c.answerTime().IsZero() || !c.mediaUp {
		fail(481, "Call/Transaction Does Not Exist", "")
		return true
	}
	if rep.EarlyOnly {
		fail(486, "Busy Here", "")
		return true
	}
	if c.media.Plan().Mode == mediaplan.ModeE2E {
		fail(488, "Not Acceptable Here", "no transfers on end-to-end calls")
		return true
	}
	if len(req.Body()) == 0 {
		fail(488, "Not Acceptable Here", "an INVITE with Replaces needs an SDP offer")
		return true
	}
	_, offer, err := sdp.Parse(req.Body())
	if err != nil {
		fail(400, "Bad Request", "malformed SDP")
		return true
	}
	if sec := c.sec.Outcome(); sec.Keyed || sec.Policy == mediaplan.SRTPDTLS || len(offer.Crypto) > 0 {
		fail(488, "Not Acceptable Here", "an encrypted trunk leg cannot be re-keyed")
		return true
	}
	plan := c.media.Plan()
	codec, ok := offer.Find(plan.SIPCodec.Name)
	if !ok {
		fail(488, "Not Acceptable Here", "")
		return true
	}
	// The call's forwarding writes the call's own payload types: answer
	// with them (RFC 3264 lets an answerer's PTs differ for static ones,
	// and telephone-event is kept only when the numbering agrees).
	codecs := []sdp.Codec{plan.SIPCodec}
	if ev, ok := offer.DTMF(8000); ok && plan.SIPDTMF.PT != 0 && ev.PT == plan.SIPDTMF.PT {
		codecs = append(codecs, plan.SIPDTMF)
	}
	if codec.PT != plan.SIPCodec.PT {
		fail(488, "Not Acceptable Here", "payload type numbering differs")
		return true
	}
	dss, err := r.trunkUA.forTrunk(route).ReadInvite(req, tx)
	if err != nil {
		fail(400, "Bad Request", "")
		return true
	}
	c.mid.mu.Lock()
	body := sdp.Offer{SessionID: uint64(time.Now().UnixNano()), Version: 1, Addr: r.mediaAddrFor(route.PeerAddr()),
		Port: int(c.trunk.RTP().LocalAddr().Port()), Codecs: codecs, Ptime: route.Ptime}.Marshal()
	leg := sipleg.New(route)
	leg.SetServer(dss)
	leg.SetRTP(c.trunk.RTP())
	leg.SetSDP(string(body))
	old, ok := c.replaceLeg(sideTrunk, leg)
	if !ok {
		c.mid.mu.Unlock()
		_ = dss.Respond(481, "Call/Transaction Does Not Exist", nil)
		return true
	}
	c.setDir(sideTrunk, "sendrecv")
	leg.SetRemote(offer)
	c.mid.mu.Unlock()
	// The call's session timer goes on, on the new dialog.
	old.StopSessionTimer()
	leg.AdoptSessionTimer(c.log, c.sessionExpired)
	leg.SetSessionTimer(old.SessionTimer())
	res := sip.NewSDPResponseFromRequest(dss.InviteRequest, body) // carries the dialog's To tag
	res.AppendHeader(c.contact(sideTrunk))
	if err := dss.WriteResponse(res); err != nil {
		c.log.Info("answer to INVITE with Replaces failed", "err", err)
	}
	c.log.Info("trunk leg replaced", "by", req.CallID().Value(), "trunk", route.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = old.Bye(ctx) // its media port is the new dialog's now
	return true
}
