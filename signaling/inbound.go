package signaling

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/callmedia"
	"github.com/mediarelay/mediarelay/signaling/digest"
	"github.com/mediarelay/mediarelay/signaling/fork"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/registrar"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
	"github.com/mediarelay/mediarelay/signaling/throttle"
)

// inboundState is what calls from trunks into browsers need: who may send
// them, and who can be reached.
type inboundState struct {
	creds *digest.Credentials
	// trunkAuth holds the trunks that authenticate with digest (by username).
	trunkAuth *digest.Credentials
	byAuth    map[string]*config.Trunk
	nonces    *digest.Nonces
	rejected  *prometheus.CounterVec
}

func (r *Relay) initInbound(cfg config.Config) error {
	creds, err := digest.LoadCredentials(cfg)
	if err != nil {
		return err
	}
	in := &inboundState{
		creds:     creds,
		trunkAuth: digest.NewCredentials(creds.Realm()),
		byAuth:    map[string]*config.Trunk{},
		nonces:    digest.NewNonces(),
		rejected: r.m.NewCounterVec("mediarelay_inbound_rejected_total",
			"INVITEs from trunks refused before ringing, by reason (unknown_source, not_found, offline, auth).", "reason"),
	}
	for _, t := range r.routes.Trunks {
		if t.InboundUsername != "" {
			in.trunkAuth.AddPassword(t.InboundUsername, t.InboundPassword)
			in.byAuth[t.InboundUsername] = t
		}
	}
	r.inb = in
	r.registrar = registrar.New(creds, cfg.SIP, r.m.Relay, r.log, r.throttled)
	return nil
}

// trunkFor identifies the trunk an INVITE comes from: by source address,
// else by digest credentials. It answers the request itself (407 or 403)
// and returns nil when the sender is not, or not yet, known.
func (r *Relay) trunkFor(req *sip.Request, tx sip.ServerTransaction) *config.Trunk {
	in := r.inb
	ip, err := netip.ParseAddr(throttle.SourceIP(req.Source()))
	if err == nil {
		ip = ip.Unmap()
		// Several trunks on one IP (a PBX and a carrier on one SBC) are told
		// apart by the source port when their address names it.
		if src, err := netip.ParseAddrPort(req.Source()); err == nil {
			for _, t := range r.routes.Trunks {
				if a, err := netip.ParseAddr(t.URI().Host); err == nil && a.Unmap() == ip && t.URI().Port == int(src.Port()) && len(t.Sources) == 0 {
					return t
				}
			}
		}
		for _, t := range r.routes.Trunks {
			for _, p := range t.SourcePrefixes() {
				if p.Contains(ip) {
					return t
				}
			}
		}
	}
	if len(in.byAuth) > 0 {
		now := time.Now()
		var res digest.Result
		var user string
		if h := req.GetHeader("Proxy-Authorization"); h != nil {
			res, user = in.trunkAuth.Verify(in.nonces, h.Value(), req.Method.String(), throttle.SourceIP(req.Source()), now)
		}
		if res == digest.OK {
			return in.byAuth[user]
		}
		if res != digest.Wrong {
			resp := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
			for _, c := range digest.Challenges(in.trunkAuth.Realm(), in.nonces.Make(throttle.SourceIP(req.Source()), now), res == digest.Stale || res == digest.Replay, in.trunkAuth.AlgsFor(user)...) {
				resp.AppendHeader(sip.NewHeader("Proxy-Authenticate", c))
			}
			_ = tx.Respond(resp)
			return nil
		}
		in.rejected.WithLabelValues("auth").Inc()
	} else {
		in.rejected.WithLabelValues("unknown_source").Inc()
	}
	// Debug: anyone on the Internet can make this line; the count is in
	// mediarelay_inbound_rejected_total.
	r.log.Debug("INVITE from unknown source refused", "source", req.Source())
	sipleg.Respond(tx, req, 403, "Forbidden")
	r.m.CountSetupFailure(403)
	return nil
}

// inbound rings the registered browsers of the user a trunk calls: the
// INVITE is checked (inboundInvite), the call admitted with its RTP port,
// the browsers rung (ringUser), and the first to answer connected
// (answerInbound).
func (r *Relay) inbound(req *sip.Request, tx sip.ServerTransaction) {
	route := r.trunkFor(req, tx)
	if route == nil {
		return
	}
	if r.replaceTrunkLeg(req, tx, route) {
		return
	}
	inv, ok := r.checkInbound(req, tx, route)
	if !ok {
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
	dss, err := r.trunkUA.forTrunk(route).ReadInvite(req, tx)
	if err != nil {
		r.refuse(req, tx, 400, "Bad Request", "")
		return
	}
	c := r.newCall(route, "inbound")
	c.trunk.SetServer(dss)
	c.from, c.to = formatNumber(route, callerOf(req)), inv.user
	c.trunkOffer, c.e2e = inv.offer, inv.e2e
	if inv.lateOffer {
		c.trunk.ExpectAckAnswer()
	}
	r.admit(c, dss.ID)
	r.wg.Add(1)
	defer r.wg.Done()

	fail := func(code int, reason, cause string, hdrs ...sip.Header) {
		c.rejectInvite(dss, code, reason, cause, hdrs...)
	}
	if !c.openRTPLeg(fail) || !c.startInboundSRTP(inv.keys, fail) {
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	c.abort = cancel
	winner := c.ringUser(ctx, req, dss, inv, fail)
	if winner == nil {
		return
	}
	c.answerInbound(req, dss, winner, inv.keys)
}

// inboundInvite is a trunk's INVITE that passed checkInbound: whom it
// calls and what it offers.
type inboundInvite struct {
	user      string
	bindings  []*registrar.Binding
	offer     sdp.Audio // the trunk's, or what the relay will offer for a late offer
	lateOffer bool
	keys      *mediaplan.InboundKeys // nil on an end-to-end call
	e2e       bool                   // DTLS-SRTP end to end: the trunk's identity goes to the browser
	codecs    []string               // what the browsers are offered
	// makeOffer makes one browser's offer.
	makeOffer func() (*media.WebRTCLeg, string, error)
}

// checkInbound refuses a trunk's INVITE the relay cannot ring anyone for:
// no such user, nobody registered, an unusable offer or session interval.
func (r *Relay) checkInbound(req *sip.Request, tx sip.ServerTransaction, route *config.Trunk) (inboundInvite, bool) {
	var inv inboundInvite
	user, ok := r.auth.BrowserUser(req.Recipient.User)
	if !ok {
		r.inb.rejected.WithLabelValues("not_found").Inc()
		r.refuse(req, tx, 404, "Not Found", "")
		return inv, false
	}
	inv.user = user
	if inv.bindings = r.registrar.Lookup(user); len(inv.bindings) == 0 {
		r.inb.rejected.WithLabelValues("offline").Inc()
		r.refuse(req, tx, 480, "Temporarily Unavailable", "")
		return inv, false
	}
	if inv.offer, inv.lateOffer, ok = r.inboundOffer(req, tx, route); !ok {
		return inv, false
	}
	// End to end when the trunk or the user asks for it and the offer has
	// DTLS-SRTP; otherwise SDES per the trunk's SRTP policy, and DTLS-SRTP
	// offers get 488.
	far, e2e, refusal := r.inboundE2E(route, user, inv.offer, inv.lateOffer)
	if !e2e && refusal == "" {
		inv.keys, refusal = mediaplan.InboundSecurity(route, inv.offer, inv.lateOffer)
	}
	if refusal != "" {
		r.refuse(req, tx, 488, "Not Acceptable Here", refusal)
		return inv, false
	}
	inv.e2e = e2e
	if tooBrief(req, tx) {
		r.m.CountSetupFailure(422)
		return inv, false
	}
	mode := route.MediaMode
	if mode == mediaplan.ModeE2E {
		mode = mediaplan.ModePassthrough // an e2e trunk's fallback never transcodes
	}
	codecs := mediaplan.BrowserCodecs(mode, route.Codecs, inv.offer)
	inv.makeOffer = func() (*media.WebRTCLeg, string, error) { return r.webrtc.Offer(codecs) }
	if e2e {
		e2eCodecs := mediaplan.E2EBrowserCodecs(route.Codecs, inv.offer)
		codecs = nil
		if len(e2eCodecs) > 0 {
			codecs = []string{e2eCodecs[0].Name}
		}
		peer := media.E2EPeer{Fingerprint: far.Fingerprint, Setup: far.Setup, SSRC: far.SSRC}
		inv.makeOffer = func() (*media.WebRTCLeg, string, error) { return r.webrtc.OfferE2E(e2eCodecs, peer) }
	}
	if inv.codecs = codecs; len(codecs) == 0 {
		r.refuse(req, tx, 488, "Not Acceptable Here", "")
		return inv, false
	}
	return inv, true
}

// minSE is the shortest session interval the relay accepts (RFC 4028's
// 90 s; a variable so tests can shorten it).
var minSE = 90 * time.Second

// tooBrief answers 422 when a trunk's INVITE asks for a session interval
// below Min-SE (RFC 4028 section 8.1). It reports whether it did.
func tooBrief(req *sip.Request, tx sip.ServerTransaction) bool {
	se, _, ok := sipleg.SessionExpires(req)
	if !ok || se >= minSE {
		return false
	}
	sipleg.Respond(tx, req, 422, "Session Interval Too Small", sip.NewHeader("Min-SE", strconv.Itoa(int(minSE.Seconds()))))
	return true
}

// inboundOffer reads a trunk INVITE's SDP offer. Without one (RFC 3261
// 13.2.1) the relay offers in its 200 what the trunk is configured for,
// and the ACK brings the answer.
func (r *Relay) inboundOffer(req *sip.Request, tx sip.ServerTransaction, route *config.Trunk) (offer sdp.Audio, late, ok bool) {
	if len(req.Body()) == 0 {
		for _, name := range route.Codecs {
			if c, ok := mediaplan.SIPCodecs[strings.ToLower(name)]; ok {
				offer.Codecs = append(offer.Codecs, c)
			}
		}
		offer.Codecs = append(offer.Codecs, mediaplan.DTMF8k)
		return offer, true, true
	}
	if ct := req.ContentType(); ct == nil || !strings.EqualFold(strings.TrimSpace(ct.Value()), "application/sdp") {
		sipleg.Respond(tx, req, 415, "Unsupported Media Type", sip.NewHeader("Accept", "application/sdp"))
		r.m.CountSetupFailure(415)
		return offer, false, false
	}
	_, offer, err := sdp.Parse(req.Body())
	if err != nil {
		r.refuse(req, tx, 400, "Bad Request", "malformed SDP")
		return offer, false, false
	}
	if usableConnection(offer) != nil {
		r.refuse(req, tx, 488, "Not Acceptable Here", "SDP without a connection address")
		return offer, false, false
	}
	return offer, false, true
}

// refuse answers a new call's INVITE with a failure (and a Warning when
// warning is not empty), counting it.
func (r *Relay) refuse(req *sip.Request, tx sip.ServerTransaction, code int, reason, warning string) {
	var hdrs []sip.Header
	if warning != "" {
		hdrs = append(hdrs, sip.NewHeader("Warning", `399 mediarelay "`+warning+`"`))
	}
	sipleg.Respond(tx, req, code, reason, hdrs...)
	r.m.CountSetupFailure(code)
}

// ringUser rings the called user's browsers with an offer each until one
// answers. Without one, or when the trunk gave up, the call ends (fail)
// and ringUser returns nil.
func (c *Call) ringUser(ctx context.Context, req *sip.Request, dss *sipgo.DialogServerSession, inv inboundInvite, fail func(int, string, string, ...sip.Header)) *fork.Branch {
	r := c.r
	ringCtx, ringCancel := context.WithTimeout(ctx, ringTimeout)
	defer ringCancel()
	var ringingSent atomic.Bool
	winner, finals, rung := r.ringer.Ring(ringCtx, c.log, inv.bindings, inv.makeOffer,
		fork.Party{Name: callerName(req), From: c.from, To: c.to, Extra: passHeaders(c.route, req)},
		func() {
			if ringingSent.CompareAndSwap(false, true) {
				_ = dss.Respond(180, "Ringing", nil)
			}
		}, dss.Context().Done())
	if !rung {
		fail(480, "Temporarily Unavailable", cdr.CauseUnreachable)
		return nil
	}
	if winner != nil && dss.Context().Err() == nil {
		return winner
	}
	if winner != nil {
		r.ringer.HangUp(winner) // answered as the trunk gave up
	}
	switch {
	case dss.Context().Err() != nil:
		c.hangup(cdr.CauseCancelled, 487, "") // the transaction layer answered 487
	case ringCtx.Err() != nil && ctx.Err() == nil:
		fail(480, "Temporarily Unavailable", cdr.CauseNoAnswer)
	case ctx.Err() != nil:
		fail(503, "Service Unavailable", cdr.CauseShutdown)
	default:
		code, reason, cause := fork.PickFinal(finals)
		fail(code, reason, cause)
	}
	return nil
}

// answerInbound connects the browser that answered: its answer is
// applied, the media started, and the trunk answered.
func (c *Call) answerInbound(req *sip.Request, dss *sipgo.DialogServerSession, winner *fork.Branch, keys *mediaplan.InboundKeys) {
	r := c.r
	c.browser.SetClient(winner.Dialog())
	c.media.SetWeb(winner.Leg())
	r.calls.Index(winner.Dialog().ID, c)
	if err := winner.Dialog().Ack(context.Background()); err != nil {
		c.log.Warn("ack to browser failed", "err", err)
	}
	c.markAnswered()
	if err := c.startInboundMedia(string(winner.Dialog().InviteResponse.Body()), keys); err != nil {
		c.log.Warn("browser answer unusable", "err", err)
		res := sip.NewResponseFromRequest(dss.InviteRequest, 488, "Not Acceptable Here", nil)
		_ = dss.WriteResponse(res)
		r.m.CountSetupFailure(488)
		r.calls.Lock()
		c.trunk.Abandon() // never established towards the trunk: no BYE
		r.calls.Unlock()
		c.hangup(cdr.CauseNoCodec, 488, "")
		return
	}
	c.watch()
	c.beginCDR()
	res := sip.NewSDPResponseFromRequest(dss.InviteRequest, []byte(c.answerSDP))
	c.trunk.AcceptSessionTimer(req, res)
	if err := dss.WriteResponse(res); err != nil {
		c.log.Warn("trunk did not take the answer", "err", err)
		c.hangup(cdr.CauseError, 0, "")
		return
	}
	c.log.Info("inbound call answered", "from", c.from, "to", c.to, "device", winner.Device())
}

// startInboundMedia applies the winning browser's answer and starts
// forwarding; c.answerSDP becomes the SDP answer for the trunk.
func (c *Call) startInboundMedia(browserAnswer string, keys *mediaplan.InboundKeys) error {
	if c.e2e {
		return c.startInboundE2E(browserAnswer)
	}
	if err := c.media.Web().SetAnswer(browserAnswer); err != nil {
		return err
	}
	var browserCodec string
	for _, x := range c.media.Web().Audio.Codecs {
		if !x.Is("telephone-event") {
			browserCodec = x.Name
			break
		}
	}
	mode := c.route.MediaMode
	if mode == mediaplan.ModeE2E {
		mode = mediaplan.ModePassthrough // fallback: terminated, never transcoded
	}
	plan, err := mediaplan.DecideInbound(mode, c.route.Codecs, c.trunkOffer, browserCodec)
	if err != nil {
		return err
	}
	c.media.Settle(plan)
	ans := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddrFor(c.trunkOffer.Addr),
		Port:      int(c.trunk.RTP().LocalAddr().Port()),
		Codecs:    plan.TrunkCodecs(),
		Ptime:     c.trunkOffer.Ptime,
	}
	keys.Answer(&ans)
	c.answerSDP = string(ans.Marshal())
	c.trunk.SetSDP(c.answerSDP)
	c.trunk.SetRemote(c.trunkOffer)
	c.mediaUp = true
	if err := c.media.Start(plan, callmedia.Ptime(c.trunkOffer, c.route)); err != nil {
		return err
	}
	c.log.Info("media negotiated", "mode", plan.Mode, "sip_codec", plan.SIPCodec.Name, "webrtc_codec", plan.BrowserCodec)
	return nil
}

// callerOf is the calling user of a trunk's INVITE: P-Asserted-Identity
// when present, else From.
func callerOf(req *sip.Request) string {
	if h := req.GetHeader("P-Asserted-Identity"); h != nil {
		var u sip.Uri
		params := sip.NewParams()
		if _, err := sip.ParseAddressValue(h.Value(), &u, &params); err == nil && u.User != "" {
			return u.User
		}
	}
	if f := req.From(); f != nil {
		return f.Address.User
	}
	return ""
}

func callerName(req *sip.Request) string {
	if h := req.GetHeader("P-Asserted-Identity"); h != nil {
		var u sip.Uri
		params := sip.NewParams()
		if name, err := sip.ParseAddressValue(h.Value(), &u, &params); err == nil && name != "" {
			return name
		}
	}
	if f := req.From(); f != nil {
		return f.DisplayName
	}
	return ""
}

// trunkAck completes a call whose INVITE had no offer: the trunk's ACK on
// its leg l carries its answer to the relay's 200.
func (c *Call) trunkAck(l *sipleg.Leg, req *sip.Request) {
	body, ok := l.AckAnswer(req)
	if !ok {
		return
	}
	_, ans, err := sdp.Parse(body)
	if err == nil {
		if _, ok := ans.Find(c.media.Plan().SIPCodec.Name); !ok {
			err = mediaplan.ErrNoCommonCodec
		}
	}
	if err != nil {
		c.log.Info("trunk's answer in the ACK unusable", "err", err)
		go c.hangup(cdr.CauseNoCodec, 0, "")
		return
	}
	l.SetRemote(ans)
}
