package signaling

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/prometheus/client_golang/prometheus"
)

// inboundState is what calls from trunks into browsers need: who may send
// them, and who can be reached.
type inboundState struct {
	creds   *credentials
	sources map[*Trunk][]netip.Prefix
	// trunkAuth holds the trunks that authenticate with digest (by username).
	trunkAuth *credentials
	byAuth    map[string]*Trunk
	nonces    *nonceMaker
	rejected  *prometheus.CounterVec
}

func (r *Relay) initInbound(cfg config.Config) error {
	creds, err := loadCredentials(cfg)
	if err != nil {
		return err
	}
	in := &inboundState{
		creds:     creds,
		sources:   map[*Trunk][]netip.Prefix{},
		trunkAuth: &credentials{realm: creds.realm, users: map[string]*credential{}},
		byAuth:    map[string]*Trunk{},
		nonces:    newNonceMaker(),
		rejected: r.m.NewCounterVec("mediarelay_inbound_rejected_total",
			"INVITEs from trunks refused before ringing, by reason (unknown_source, not_found, offline, auth).", "reason"),
	}
	for _, t := range r.trunks {
		var list []netip.Prefix
		for _, s := range t.Sources {
			p, err := config.ParseSource(s)
			if err != nil {
				return fmt.Errorf("trunks %s: sources %q: %w", t.Name, s, err)
			}
			list = append(list, p)
		}
		if len(list) == 0 {
			if ip, err := netip.ParseAddr(t.uri.Host); err == nil {
				list = append(list, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			}
		}
		in.sources[t] = list
		if t.InboundUsername != "" {
			in.trunkAuth.users[t.InboundUsername] = &credential{name: t.InboundUsername, ha1: map[string]string{
				algMD5:    hexHash(algMD5, t.InboundUsername, creds.realm, t.InboundPassword),
				algSHA256: hexHash(algSHA256, t.InboundUsername, creds.realm, t.InboundPassword),
			}}
			in.byAuth[t.InboundUsername] = t
		}
	}
	r.inb = in
	r.registrar = newRegistrar(r, creds)
	return nil
}

// trunkFor identifies the trunk an INVITE comes from: by source address,
// else by digest credentials. It answers the request itself (407 or 403)
// and returns nil when the sender is not, or not yet, known.
func (r *Relay) trunkFor(req *sip.Request, tx sip.ServerTransaction) *Trunk {
	in := r.inb
	ip, err := netip.ParseAddr(sourceIP(req.Source()))
	if err == nil {
		ip = ip.Unmap()
		// Several trunks on one IP (a PBX and a carrier on one SBC) are told
		// apart by the source port when their address names it.
		if src, err := netip.ParseAddrPort(req.Source()); err == nil {
			for _, t := range r.trunks {
				if a, err := netip.ParseAddr(t.uri.Host); err == nil && a.Unmap() == ip && t.uri.Port == int(src.Port()) && len(t.Sources) == 0 {
					return t
				}
			}
		}
		for _, t := range r.trunks {
			for _, p := range in.sources[t] {
				if p.Contains(ip) {
					return t
				}
			}
		}
	}
	if len(in.byAuth) > 0 {
		now := time.Now()
		var res digestResult
		var user string
		if h := req.GetHeader("Proxy-Authorization"); h != nil {
			res, user = in.trunkAuth.verify(in.nonces, h.Value(), req.Method.String(), sourceIP(req.Source()), now)
		}
		if res == digestOK {
			return in.byAuth[user]
		}
		if res != digestWrong {
			resp := sip.NewResponseFromRequest(req, 407, "Proxy Authentication Required", nil)
			for _, c := range challenges(in.trunkAuth.realm, in.nonces.make(sourceIP(req.Source()), now), res == digestStale || res == digestReplay, in.trunkAuth.algsFor(user)...) {
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
	respond(tx, req, 403, "Forbidden")
	r.countSetupFailure(403)
	return nil
}

// browserCodecsFor lists what the relay offers the browser for a trunk's
// offer: codecs it can pass through in the trunk's order, then Opus when
// it can transcode.
func browserCodecsFor(mode string, allowed []string, offer sdp.Audio) []string {
	var out []string
	canTranscode := false
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") || !hasFold(allowed, c.Name) {
			continue
		}
		if transcodable(c.Name) {
			canTranscode = true
		}
		if _, err := webrtcCodec(c.Name); err == nil && mode != ModeTranscode && !hasFold(out, c.Name) {
			out = append(out, strings.ToLower(c.Name))
		}
	}
	if canTranscode && mode != ModePassthrough && !hasFold(out, "opus") {
		out = append(out, "opus")
	}
	return out
}

// planInbound settles the media once the browser has answered.
func planInbound(mode string, allowed []string, offer sdp.Audio, browserCodec string) (mediaPlan, error) {
	p := mediaPlan{BrowserCodec: browserCodec}
	found := false
	if mode != ModeTranscode {
		for _, c := range offer.Codecs {
			if c.Is(browserCodec) && hasFold(allowed, c.Name) {
				p.Mode, p.SIPCodec, found = ModePassthrough, c, true
				break
			}
		}
	}
	if !found && mode != ModePassthrough && strings.EqualFold(browserCodec, "opus") {
		for _, c := range offer.Codecs {
			if transcodable(c.Name) && hasFold(allowed, c.Name) {
				p.Mode, p.SIPCodec, found = ModeTranscode, c, true
				break
			}
		}
	}
	if !found {
		return p, errNoCommonCodec
	}
	if ev, ok := offer.DTMF(p.SIPCodec.Clock); ok {
		p.SIPDTMF = ev
	} else if ev, ok := offer.DTMF(8000); ok {
		p.SIPDTMF = ev
	}
	return p, nil
}

// inbound rings the registered browsers of the user a trunk calls.
func (r *Relay) inbound(req *sip.Request, tx sip.ServerTransaction) {
	route := r.trunkFor(req, tx)
	if route == nil {
		return
	}
	if r.replaceTrunkLeg(req, tx, route) { // transfer_join.go
		return
	}
	in := r.inb
	user, ok := r.browserUser(req.Recipient.User)
	if !ok {
		in.rejected.WithLabelValues("not_found").Inc()
		respond(tx, req, 404, "Not Found")
		r.countSetupFailure(404)
		return
	}
	bindings := r.registrar.lookup(user)
	if len(bindings) == 0 {
		in.rejected.WithLabelValues("offline").Inc()
		respond(tx, req, 480, "Temporarily Unavailable")
		r.countSetupFailure(480)
		return
	}
	var offer sdp.Audio
	var err error
	lateOffer := len(req.Body()) == 0
	switch {
	case lateOffer:
		// No offer (RFC 3261 13.2.1): the relay offers in its 200 what the
		// trunk is configured for, and the ACK brings the answer.
		for _, name := range route.Codecs {
			if c, ok := sipCodecs[strings.ToLower(name)]; ok {
				offer.Codecs = append(offer.Codecs, c)
			}
		}
		offer.Codecs = append(offer.Codecs, dtmf8k)
	case req.ContentType() == nil || !strings.EqualFold(strings.TrimSpace(req.ContentType().Value()), "application/sdp"):
		respond(tx, req, 415, "Unsupported Media Type", sip.NewHeader("Accept", "application/sdp"))
		r.countSetupFailure(415)
		return
	default:
		_, offer, err = sdp.Parse(req.Body())
	}
	if err != nil {
		respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 mediarelay "malformed SDP"`))
		r.countSetupFailure(400)
		return
	}
	if !lateOffer && usableConnection(offer) != nil {
		respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 mediarelay "SDP without a connection address"`))
		r.countSetupFailure(488)
		return
	}
	// SDES per the trunk's SRTP policy (sdes_inbound.go); DTLS-SRTP offers
	// from trunks get 488.
	keys, refuse := inboundSecurity(route, offer, lateOffer)
	if refuse != "" {
		respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 mediarelay "`+refuse+`"`))
		r.countSetupFailure(488)
		return
	}
	if tooBrief(req, tx) {
		r.countSetupFailure(422)
		return
	}
	codecs := browserCodecsFor(route.MediaMode, route.Codecs, offer)
	if len(codecs) == 0 {
		respond(tx, req, 488, "Not Acceptable Here")
		r.countSetupFailure(488)
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
	dss, err := r.dialogUAFor(route).ReadInvite(req, tx)
	if err != nil {
		respond(tx, req, 400, "Bad Request")
		r.countSetupFailure(400)
		return
	}
	c := r.newCall(route, "inbound")
	c.trunk.dialog = serverDialog(dss)
	c.from, c.to = formatNumber(route, callerOf(req)), user
	c.trunkOffer, c.lateOffer = offer, lateOffer
	r.admit(c, dss.ID)
	r.wg.Add(1)
	defer r.wg.Done()

	fail := func(code int, reason, cause string, hdrs ...sip.Header) {
		c.rejectInvite(dss, code, reason, cause, hdrs...)
	}
	if !c.openRTPLeg(fail) || !c.startInboundSRTP(keys, fail) {
		return
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	c.abort = cancel
	ringCtx, ringCancel := context.WithTimeout(ctx, ringTimeout)
	defer ringCancel()

	var ringingSent atomic.Bool
	winner, finals, rung := r.ringBrowsers(ringCtx, c, bindings, func() (*media.WebRTCLeg, string, error) { return r.webrtc.Offer(codecs) },
		ringParty{name: callerName(req), from: c.from, to: c.to, extra: passHeaders(route, req)},
		func() {
			if ringingSent.CompareAndSwap(false, true) {
				_ = dss.Respond(180, "Ringing", nil)
			}
		}, dss.Context().Done())
	if !rung {
		fail(480, "Temporarily Unavailable", endUnreachable)
		return
	}
	if winner == nil || dss.Context().Err() != nil {
		if winner != nil {
			_ = winner.dcs.Ack(context.Background())
			bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = winner.dcs.Bye(bctx)
			bcancel()
			winner.leg.Close()
		}
		switch {
		case dss.Context().Err() != nil:
			c.hangup(endCancelled, 487, "") // the transaction layer answered 487
		case ringCtx.Err() != nil && ctx.Err() == nil:
			fail(480, "Temporarily Unavailable", endNoAnswer)
		case ctx.Err() != nil:
			fail(503, "Service Unavailable", endShutdown)
		default:
			code, reason, cause := pickFinal(finals)
			fail(code, reason, cause)
		}
		return
	}

	// The browser answered: apply its answer, then answer the trunk.
	c.browser.dialog = clientDialog(winner.dcs)
	c.setWeb(winner.leg)
	r.indexDialog(c, winner.dcs.ID)
	if err := winner.dcs.Ack(context.Background()); err != nil {
		c.log.Warn("ack to browser failed", "err", err)
	}
	c.markAnswered()
	if err := c.startInboundMedia(string(winner.dcs.InviteResponse.Body()), keys); err != nil {
		c.log.Warn("browser answer unusable", "err", err)
		res := sip.NewResponseFromRequest(dss.InviteRequest, 488, "Not Acceptable Here", nil)
		_ = dss.WriteResponse(res)
		r.countSetupFailure(488)
		c.r.mu.Lock()
		c.trunk.dss = nil // never established towards the trunk: no BYE
		c.r.mu.Unlock()
		c.hangup(endNoCodec, 488, "")
		return
	}
	go c.watch()
	c.beginCDR()
	res := sip.NewSDPResponseFromRequest(dss.InviteRequest, []byte(c.answerSDP))
	c.trunk.acceptSessionTimer(req, res)
	if err := dss.WriteResponse(res); err != nil {
		c.log.Warn("trunk did not take the answer", "err", err)
		c.hangup(endError, 0, "")
		return
	}
	c.log.Info("inbound call answered", "from", c.from, "to", c.to, "device", winner.b.key)
}

// startInboundMedia applies the winning browser's answer and starts
// forwarding; c.answerSDP becomes the SDP answer for the trunk.
func (c *Call) startInboundMedia(browserAnswer string, keys *inboundKeys) error {
	if err := c.web.SetAnswer(browserAnswer); err != nil {
		return err
	}
	var browserCodec string
	for _, x := range c.web.Audio.Codecs {
		if !x.Is("telephone-event") {
			browserCodec = x.Name
			break
		}
	}
	plan, err := planInbound(c.route.MediaMode, c.route.Codecs, c.trunkOffer, browserCodec)
	if err != nil {
		return err
	}
	c.active.Store(&activeMedia{plan: plan})
	ans := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddrFor(c.trunkOffer.Addr),
		Port:      int(c.trunk.rtp.LocalAddr().Port()),
		Codecs:    sipCodecList(plan),
		Ptime:     c.trunkOffer.Ptime,
	}
	keys.answerSecurity(&ans)
	c.answerSDP = string(ans.Marshal())
	c.trunk.sdp = c.answerSDP
	c.trunk.setRemote(c.trunkOffer)
	c.mediaUp = true
	if err := c.startForwarding(plan, sipPtime(c.trunkOffer, c.route)); err != nil {
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

func hasFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// trunkAck completes a call whose INVITE had no offer: the trunk's ACK
// carries its answer to the relay's 200.
func (c *Call) trunkAck(req *sip.Request) {
	if !c.lateOffer || len(req.Body()) == 0 || !c.lateDone.CompareAndSwap(false, true) {
		return
	}
	_, ans, err := sdp.Parse(req.Body())
	if err == nil {
		if _, ok := ans.Find(c.currentPlan().SIPCodec.Name); !ok {
			err = errNoCommonCodec
		}
	}
	if err != nil {
		c.log.Info("trunk's answer in the ACK unusable", "err", err)
		go c.hangup(endNoCodec, 0, "")
		return
	}
	c.trunk.setRemote(ans)
}
