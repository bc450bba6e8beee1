package signaling

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
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

// fork is one browser being rung for an inbound call.
type fork struct {
	b           *binding
	leg         *media.WebRTCLeg
	dcs         *sipgo.DialogClientSession
	cancel      context.CancelCauseFunc
	provisional atomic.Bool
	cancelled   atomic.Bool
}

type forkResult struct {
	f   *fork
	err error
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
	// End to end (e2e.go) when the trunk or the user asks for it and the
	// offer has DTLS-SRTP; otherwise SDES per the trunk's SRTP policy
	// (sdes_inbound.go), and DTLS-SRTP offers get 488.
	far, e2e, refuse := r.inboundE2E(route, user, offer, lateOffer)
	var keys *inboundKeys
	if !e2e && refuse == "" {
		keys, refuse = inboundSecurity(route, offer, lateOffer)
	}
	if refuse != "" {
		respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 mediarelay "`+refuse+`"`))
		r.countSetupFailure(488)
		return
	}
	if tooBrief(req, tx) {
		r.countSetupFailure(422)
		return
	}
	mode := route.MediaMode
	if mode == ModeE2E {
		mode = ModePassthrough // an e2e trunk's fallback never transcodes
	}
	codecs := browserCodecsFor(mode, route.Codecs, offer)
	makeOffer := func() (*media.WebRTCLeg, string, error) { return r.webrtc.Offer(codecs) }
	if e2e {
		e2eCodecs := e2eBrowserCodecs(route.Codecs, offer)
		codecs = nil
		if len(e2eCodecs) > 0 {
			codecs = []string{e2eCodecs[0].Name}
		}
		peer := media.E2EPeer{Fingerprint: far.fingerprint, Setup: far.setup, SSRC: far.ssrc}
		makeOffer = func() (*media.WebRTCLeg, string, error) { return r.webrtc.OfferE2E(e2eCodecs, peer) }
	}
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
	c := &Call{
		r:             r,
		id:            newCallID(),
		inTrunk:       dss,
		trunkDialogID: dss.ID,
		trunkCallID:   req.CallID().Value(),
		from:          formatNumber(route, callerOf(req)),
		to:            user,
		route:         route,
		direction:     "inbound",
		trunkOffer:    offer,
		lateOffer:     lateOffer,
		e2e:           e2e,
		start:         time.Now(),
		ended:         make(chan struct{}),
	}
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

	forks := r.ring(ringCtx, c, bindings, makeOffer,
		ringParty{name: callerName(req), from: c.from, to: c.to, extra: passHeaders(route, req)})
	if len(forks) == 0 {
		fail(480, "Temporarily Unavailable", endUnreachable)
		return
	}
	var ringingSent atomic.Bool
	results := waitForks(ringCtx, forks, func() {
		if ringingSent.CompareAndSwap(false, true) {
			_ = dss.Respond(180, "Ringing", nil)
		}
	})

	var winner *fork
	var finals []*sip.Response
	pending := len(forks)
	trunkGone := dss.Context().Done()
	ringDone := ringCtx.Done()
	for pending > 0 && winner == nil {
		select {
		case res := <-results:
			pending--
			var dr *sipgo.ErrDialogResponse
			switch {
			case res.err == nil:
				winner = res.f
			case errors.As(res.err, &dr):
				finals = append(finals, dr.Res)
				res.f.leg.Close()
				if code := dr.Res.StatusCode; code >= 600 {
					// 6xx ends the search (RFC 3261 16.7).
					r.cancelForks(forks, nil, `SIP;cause=600;text="Busy Everywhere"`)
					pending = r.drainForks(results, pending)
				}
			default:
				res.f.leg.Close()
			}
		case <-trunkGone:
			trunkGone, ringDone = nil, nil
			r.cancelForks(forks, nil, `SIP;cause=487;text="Request Terminated"`)
		case <-ringDone:
			trunkGone, ringDone = nil, nil
			r.cancelForks(forks, nil, `SIP;cause=408;text="Request Timeout"`)
		}
	}
	if winner != nil {
		// Others: CANCEL, or BYE if they answered too.
		r.cancelForks(forks, winner, `SIP;cause=200;text="Call completed elsewhere"`)
		go r.byeLateAnswers(results, pending)
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
	c.outBrowser = winner.dcs
	c.setWeb(winner.leg)
	c.browserDialogID = winner.dcs.ID
	c.browserCallID = winner.dcs.InviteRequest.CallID().Value()
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
		c.inTrunk = nil // never established towards the trunk
		c.hangup(endNoCodec, 488, "")
		return
	}
	go c.watch()
	c.beginCDR()
	res := sip.NewSDPResponseFromRequest(dss.InviteRequest, []byte(c.answerSDP))
	c.addSessionTimer(req, res)
	if err := dss.WriteResponse(res); err != nil {
		c.log.Warn("trunk did not take the answer", "err", err)
		c.hangup(endError, 0, "")
		return
	}
	c.log.Info("inbound call answered", "from", c.from, "to", c.to, "device", winner.b.key)
}

// ring sends an INVITE with a fresh WebRTC offer to each binding.
// ringParty says who calls whom in the INVITEs to browsers.
type ringParty struct {
	name, from, to string
	extra          []sip.Header
}

func (r *Relay) ring(ctx context.Context, c *Call, bindings []*binding, makeOffer func() (*media.WebRTCLeg, string, error), party ringParty) []*fork {
	var forks []*fork
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range bindings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leg, offer, err := makeOffer()
			if err != nil {
				c.log.Warn("webrtc offer failed", "err", err)
				return
			}
			req := sip.NewRequest(sip.INVITE, *b.contact.Address.Clone())
			req.SetBody([]byte(offer))
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			from := &sip.FromHeader{DisplayName: party.name, Address: sip.Uri{User: party.from, Host: r.host}, Params: sip.NewParams()}
			from.Params.Add("tag", sip.GenerateTagN(16))
			req.AppendHeader(from)
			req.AppendHeader(&sip.ToHeader{Address: sip.Uri{User: party.to, Host: r.host}})
			for _, h := range party.extra {
				req.AppendHeader(sip.HeaderClone(h))
			}
			req.SetTransport(strings.ToUpper(b.transport))
			req.SetDestination(b.source)
			f := &fork{b: b, leg: leg}
			dcs, err := r.browserUA.WriteInvite(ctx, req)
			if err != nil {
				c.log.Warn("browser unreachable", "device", b.key, "err", err)
				leg.Close()
				return
			}
			f.dcs = dcs
			mu.Lock()
			forks = append(forks, f)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return forks
}

// waitForks waits for each fork's answer on its own goroutine and reports
// it on the returned channel; onRinging runs on a fork's first ringing
// response. The end of ctx cancels a fork's wait (and sipgo then sends a
// CANCEL), except for a fork the relay has already CANCELled itself
// (cancelForks): that one waits for its 487, and a second CANCEL on the
// same branch would go unanswered.
func waitForks(ctx context.Context, forks []*fork, onRinging func()) chan forkResult {
	results := make(chan forkResult, len(forks))
	for _, f := range forks {
		fctx, fcancel := context.WithCancelCause(context.WithoutCancel(ctx))
		f.cancel = fcancel
		stop := context.AfterFunc(ctx, func() {
			if !f.cancelled.Load() {
				fcancel(context.Cause(ctx))
			}
		})
		go func() {
			defer stop()
			defer fcancel(nil)
			err := f.dcs.WaitAnswer(fctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
				if res.IsProvisional() && res.StatusCode != 100 {
					f.provisional.Store(true)
					onRinging()
				}
				return nil
			}})
			results <- forkResult{f, err}
		}()
	}
	return results
}

// cancelForks stops every fork but keep: a CANCEL carrying reason where a
// provisional response allows one, else the wait is abandoned.
func (r *Relay) cancelForks(forks []*fork, keep *fork, reason string) {
	for _, f := range forks {
		if f == keep || !f.cancelled.CompareAndSwap(false, true) {
			continue
		}
		if f.provisional.Load() && f.dcs.InviteResponse != nil {
			go r.sendCancel(f, reason)
			continue
		}
		f.cancel(sipgo.WaitAnswerForceCancelErr)
	}
}

// sendCancel sends a CANCEL with a Reason header (RFC 3326) for a fork's
// INVITE; the INVITE transaction then ends with 487.
func (r *Relay) sendCancel(f *fork, reason string) {
	inv := f.dcs.InviteRequest
	cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
	cancel.AppendHeader(sip.HeaderClone(inv.Via()))
	cancel.AppendHeader(sip.HeaderClone(inv.From()))
	cancel.AppendHeader(sip.HeaderClone(inv.To()))
	cancel.AppendHeader(sip.HeaderClone(inv.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	if reason != "" {
		cancel.AppendHeader(sip.NewHeader("Reason", reason))
	}
	cancel.SetTransport(inv.Transport())
	cancel.SetDestination(f.b.source)
	ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if _, err := r.client.Do(ctx, cancel); err != nil {
		r.log.Debug("cancel failed", "device", f.b.key, "err", err)
		f.cancel(sipgo.WaitAnswerForceCancelErr)
		return
	}
	// The device owes a 487; don't wait for it forever.
	time.AfterFunc(cancelAnswerWait, func() { f.cancel(sipgo.WaitAnswerForceCancelErr) })
}

// cancelAnswerWait is how long a CANCELled fork waits for its 487.
const cancelAnswerWait = 5 * time.Second

// drainForks waits for the remaining forks after a 6xx.
func (r *Relay) drainForks(results chan forkResult, pending int) int {
	for ; pending > 0; pending-- {
		res := <-results
		if res.err == nil {
			r.hangUpFork(res.f)
		} else {
			res.f.leg.Close()
		}
	}
	return 0
}

// byeLateAnswers ends forks that answered after another won.
func (r *Relay) byeLateAnswers(results chan forkResult, pending int) {
	for ; pending > 0; pending-- {
		res := <-results
		if res.err == nil {
			r.hangUpFork(res.f)
		} else {
			res.f.leg.Close()
		}
	}
}

func (r *Relay) hangUpFork(f *fork) {
	_ = f.dcs.Ack(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.dcs.Bye(ctx)
	f.leg.Close()
}

// pickFinal chooses what the trunk hears when no browser answered: 6xx
// first, then busy, then the lowest other code.
func pickFinal(finals []*sip.Response) (int, string, string) {
	var best *sip.Response
	for _, res := range finals {
		switch {
		case best == nil:
			best = res
		case res.StatusCode >= 600 && best.StatusCode < 600:
			best = res
		case best.StatusCode >= 600:
		case res.StatusCode == 486 && best.StatusCode != 486:
			best = res
		case best.StatusCode != 486 && res.StatusCode < best.StatusCode:
			best = res
		}
	}
	if best == nil {
		return 480, "Temporarily Unavailable", endNoAnswer
	}
	code := int(best.StatusCode)
	switch {
	case code == 486 || code == 600 || code == 603:
		return code, best.Reason, endBusy
	case code == 408 || code == 480 || code == 487:
		return 480, "Temporarily Unavailable", endNoAnswer
	case code >= 400 && code < 700 && code != 401 && code != 407:
		return code, best.Reason, endRejected
	}
	return 480, "Temporarily Unavailable", endRejected
}

// startInboundMedia applies the winning browser's answer and starts
// forwarding; c.answerSDP becomes the SDP answer for the trunk.
func (c *Call) startInboundMedia(browserAnswer string, keys *inboundKeys) error {
	if c.e2e {
		return c.startInboundE2E(browserAnswer)
	}
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
	mode := c.route.MediaMode
	if mode == ModeE2E {
		mode = ModePassthrough // fallback: terminated, never transcoded
	}
	plan, err := planInbound(mode, c.route.Codecs, c.trunkOffer, browserCodec)
	if err != nil {
		return err
	}
	c.active.Store(&activeMedia{plan: plan})
	codecs := sipCodecList(plan)
	c.sdpVersion = 1
	c.sdpSession = uint64(time.Now().UnixNano())
	ans := sdp.Offer{
		SessionID: c.sdpSession,
		Version:   c.sdpVersion,
		Addr:      c.r.mediaAddrFor(c.trunkOffer.Addr),
		Port:      int(c.rtp.LocalAddr().Port()),
		Codecs:    codecs,
		Ptime:     c.trunkOffer.Ptime,
	}
	keys.answerSecurity(&ans)
	c.answerSDP = string(ans.Marshal())
	c.sipCodecs = codecs
	c.setRemote(c.trunkOffer)
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

// readTrunkBye answers a BYE from the trunk on either kind of call.
func (c *Call) readTrunkBye(req *sip.Request, tx sip.ServerTransaction) {
	switch {
	case c.trunk != nil:
		_ = c.trunk.ReadBye(req, tx)
	case c.inTrunk != nil:
		_ = c.inTrunk.ReadBye(req, tx)
	default:
		respond(tx, req, 200, "OK")
	}
}

// readBrowserBye answers a BYE from the browser on either kind of call.
func (c *Call) readBrowserBye(req *sip.Request, tx sip.ServerTransaction) {
	switch {
	case c.browser != nil:
		_ = c.browser.ReadBye(req, tx)
	case c.outBrowser != nil:
		_ = c.outBrowser.ReadBye(req, tx)
	default:
		respond(tx, req, 200, "OK")
	}
}

// byeInbound sends BYE on the dialogs of an inbound call (hangup).
func (c *Call) byeInbound(cause string, bye func(func(context.Context) error, string)) {
	c.r.mu.Lock()
	inTrunk := c.inTrunk // read under the lock a transfer's hand-off takes
	c.r.mu.Unlock()
	if cause != endNormalTrunk && inTrunk != nil {
		bye(inTrunk.Bye, "trunk")
	}
	if cause != endNormalBrowser && c.outBrowser != nil {
		bye(c.outBrowser.Bye, "browser")
	}
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
	c.setRemote(ans)
}
