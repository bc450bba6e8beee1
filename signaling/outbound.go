package signaling

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// ringTimeout bounds how long a trunk may ring before the relay gives up.
const ringTimeout = 3 * time.Minute

var (
	errInviteTimeout = errors.New("trunk did not respond")
	errRingTimeout   = errors.New("trunk did not answer")
	errBrowserCancel = errors.New("browser cancelled")
)

// outbound relays a browser's INVITE to a trunk. It returns when the
// browser's INVITE transaction is over (answered, rejected or cancelled);
// an answered call lives on in its Call. The INVITE is checked
// (checkOutbound), the call admitted with its RTP port, the trunk called
// (callTrunk), and its answer relayed (answerOutbound).
func (r *Relay) outbound(req *sip.Request, tx sip.ServerTransaction) {
	_ = tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil))
	out, ok := r.checkOutbound(req, tx)
	if !ok {
		return
	}
	dss, err := r.browserUA.ReadInvite(req, tx)
	if err != nil {
		r.refuse(req, tx, 400, "Bad Request", "")
		return
	}
	c := r.newCall(out.route, "outbound")
	c.browser.SetServer(dss)
	c.from, c.to = req.From().Address.User, req.Recipient.User
	c.browserOffer, c.offered, c.e2e = string(req.Body()), out.offered, out.e2e
	c.user, c.wsSource = out.caller, req.Source()
	if out.caller != "" {
		c.from = out.caller // the caller is who authenticated, whatever From says
	}
	if !r.auth.Admit(c.user, req, tx) {
		return
	}
	c.userHeld = c.user != ""
	r.admit(c, dss.ID)
	r.wg.Add(1)
	defer r.wg.Done()

	fail := func(code int, reason, cause string, hdrs ...sip.Header) {
		c.rejectInvite(dss, code, reason, cause, hdrs...)
	}
	if !c.openRTPLeg(fail) {
		return
	}
	body, err := c.trunkOfferSDP(out.browserDTLS)
	if err != nil {
		c.log.Warn("trunk's SRTP policy cannot be met; not calling it", "srtp", c.route.SRTP, "transport", c.route.Transport, "err", err)
		fail(488, "Not Acceptable Here", setupCause(err), sip.NewHeader("Warning", `399 mediarelay "SRTP policy"`))
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	c.abort = cancel
	dcs := c.callTrunk(ctx, cancel, req, dss, body, fail)
	if dcs == nil {
		return
	}
	c.answerOutbound(dss, dcs)
}

// outboundInvite is a browser's INVITE that passed checkOutbound.
type outboundInvite struct {
	route   *config.Trunk
	caller  string      // the authenticated user, "" for anonymous calls
	offered []sdp.Codec // what the trunk is offered
	// e2e: DTLS-SRTP end to end; the browser's identity goes to the far end.
	e2e         bool
	browserDTLS mediaplan.DTLSIdentity
}

// checkOutbound refuses a browser's INVITE the relay cannot place: no SDP
// offer, no route, a caller not allowed, no codec for the trunk.
func (r *Relay) checkOutbound(req *sip.Request, tx sip.ServerTransaction) (outboundInvite, bool) {
	var out outboundInvite
	if ct := req.ContentType(); ct == nil || !strings.EqualFold(strings.TrimSpace(ct.Value()), "application/sdp") || len(req.Body()) == 0 {
		r.refuse(req, tx, 488, "Not Acceptable Here", "an SDP offer is required")
		return out, false
	}
	_, offer, err := sdp.Parse(req.Body())
	if err != nil {
		r.refuse(req, tx, 400, "Bad Request", "malformed SDP")
		return out, false
	}
	if out.route = r.route(req.Recipient.User); out.route == nil {
		r.refuse(req, tx, 404, "Not Found", "")
		return out, false
	}
	var ok bool
	if out.caller, ok = r.auth.Authorize(req, tx, out.route); !ok {
		return out, false
	}
	if out.e2e = out.route.MediaMode == mediaplan.ModeE2E; out.e2e {
		// The browser's DTLS identity goes to the far end as it is.
		fp, setup, derr := media.RemoteDTLS(string(req.Body()))
		if derr != nil {
			r.refuse(req, tx, 488, "Not Acceptable Here", "end-to-end media needs DTLS-SRTP from the browser")
			return out, false
		}
		out.browserDTLS = mediaplan.DTLSIdentity{Fingerprint: fp, Setup: setup}
		out.offered, err = mediaplan.E2EOffer(out.route.Codecs, offer)
	} else {
		out.offered, err = mediaplan.TrunkOffer(out.route.MediaMode, out.route.Codecs, offer)
	}
	if err != nil {
		r.refuse(req, tx, 488, "Not Acceptable Here", "")
		return out, false
	}
	return out, true
}

// trunkOfferSDP is the relay's offer to the trunk: the codecs offered, on
// the call's RTP port, keyed per the trunk's SRTP policy, or carrying the
// browser's DTLS identity on an end-to-end call.
func (c *Call) trunkOfferSDP(browserDTLS mediaplan.DTLSIdentity) ([]byte, error) {
	o := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddrFor(c.route.PeerAddr()),
		Port:      int(c.trunk.RTP().LocalAddr().Port()),
		Codecs:    c.offered,
		Ptime:     c.route.Ptime,
	}
	if c.e2e {
		ice, err := c.trunk.RTP().EnableICE(o.Addr)
		if err != nil {
			return nil, err
		}
		mediaplan.E2EOfferSDP(&o, browserDTLS, ice)
	} else if err := c.srtp.Offer(&o); err != nil {
		return nil, err
	}
	return o.Marshal(), nil
}

// callTrunk sends the INVITE to the trunk and waits for its answer,
// relaying ringing and early media (183 with SDP) to the browser. Without
// an answer the call ends (fail) and callTrunk returns nil.
func (c *Call) callTrunk(ctx context.Context, cancel context.CancelCauseFunc, req *sip.Request, dss *sipgo.DialogServerSession,
	body []byte, fail func(int, string, string, ...sip.Header)) *sipgo.DialogClientSession {
	route, user := c.route, req.Recipient.User
	recipient := route.RequestURI(user)
	from, identity := c.r.outboundIdentity(route, req, c.from)
	to := &sip.ToHeader{Address: sip.Uri{User: user, Host: recipient.Host}}
	var provisional atomic.Bool
	go c.superviseInvite(ctx, dss.Context(), cancel, &provisional)

	dcs, err := c.r.trunkUA.forTrunk(route).Invite(ctx, *recipient, body, append([]sip.Header{from, to, sip.NewHeader("Content-Type", "application/sdp"),
		sip.NewHeader("Supported", "timer")}, identity...)...)
	if err != nil {
		logTrunkError(c.log, route, err)
		fail(503, "Trunk Unreachable", cdr.CauseUnreachable)
		return nil
	}
	c.trunk.SetClient(dcs)
	c.trunk.SetSDP(string(body))

	earlySent := false
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{
		Username: route.Username,
		Password: route.Password,
		OnResponse: func(res *sip.Response) error {
			if !res.IsProvisional() || res.StatusCode == 100 {
				return nil
			}
			provisional.Store(true)
			if res.StatusCode == 183 && len(res.Body()) > 0 && !earlySent {
				_, ans, err := sdp.Parse(res.Body())
				if err != nil {
					return fmt.Errorf("183 sdp: %w", err)
				}
				if err := c.setupMedia(ans); err != nil {
					return err
				}
				earlySent = true
				p := sip.NewResponseFromRequest(dss.InviteRequest, 183, "Session Progress", []byte(c.answerSDP))
				p.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				_ = dss.WriteResponse(p) // a cancelled browser is handled by superviseInvite
				return nil
			}
			_ = dss.Respond(180, "Ringing", nil)
			return nil
		},
	})
	if err != nil {
		c.failInvite(ctx, err, fail)
		return nil
	}
	return dcs
}

// answerOutbound sets up the media for the trunk's answer and answers the
// browser.
func (c *Call) answerOutbound(dss *sipgo.DialogServerSession, dcs *sipgo.DialogClientSession) {
	r := c.r
	// ACK first: a DTLS-SRTP trunk may wait for it before its handshake,
	// which setupMedia waits for.
	if ackErr := dcs.Ack(context.Background()); ackErr != nil {
		c.log.Warn("ack to trunk failed", "err", ackErr)
	}
	_, ans, perr := sdp.Parse(dcs.InviteResponse.Body())
	if perr == nil {
		perr = c.setupMedia(ans)
	}
	c.trunk.Confirm()
	r.calls.Index(dcs.ID, c)
	c.markAnswered()
	c.trunk.AnsweredSessionTimer(dcs.InviteResponse)
	if perr != nil {
		c.log.Warn("trunk answer unusable", "err", perr)
		// The trunk's dialog exists now: hangup sends it a BYE.
		res := sip.NewResponseFromRequest(dss.InviteRequest, 488, "Not Acceptable Here", nil)
		if errors.Is(perr, mediaplan.ErrE2ENoDTLS) {
			res.AppendHeader(e2eWarning())
		}
		_ = dss.WriteResponse(res)
		r.m.CountSetupFailure(488)
		c.browserRejected.Store(true) // no BYE: the browser got a final failure
		c.hangup(setupCause(perr), 488, "")
		return
	}
	c.watch()
	c.beginCDR()
	if err := dss.WriteResponse(c.browserAnswer(dss.InviteRequest)); err != nil {
		c.log.Warn("browser did not take the answer", "err", err)
		c.hangup(cdr.CauseError, 0, "")
		return
	}
	c.log.Info("call answered", "from", c.from, "to", c.to)
}

// modeHeader tells the browser, in the 200 OK to its INVITE, whether the
// relay passes its audio through or transcodes it (the softphone shows it).
const modeHeader = "X-Mediarelay-Mode"

// browserAnswer is the 200 OK with the relay's SDP answer to the
// browser's INVITE.
func (c *Call) browserAnswer(invite *sip.Request) *sip.Response {
	res := sip.NewSDPResponseFromRequest(invite, []byte(c.answerSDP))
	if c.media.Settled() {
		res.AppendHeader(sip.NewHeader(modeHeader, c.media.Plan().Mode))
	}
	return res
}

// superviseInvite cancels the INVITE when the browser cancels, the trunk
// does not respond in time, or it rings too long. Without a provisional
// response a CANCEL may not be sent, so the wait is abandoned instead.
func (c *Call) superviseInvite(ctx, browser context.Context, cancel context.CancelCauseFunc, provisional *atomic.Bool) {
	inviteT := time.NewTimer(c.r.cfg.SIP.InviteTimeout)
	ringT := time.NewTimer(ringTimeout)
	defer inviteT.Stop()
	defer ringT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-browser.Done():
			c.stop(cancel, errBrowserCancel, !provisional.Load())
			return
		case <-inviteT.C:
			if !provisional.Load() {
				c.stop(cancel, errInviteTimeout, true)
				return
			}
		case <-ringT.C:
			c.stop(cancel, errRingTimeout, false)
			return
		}
	}
}

// stop cancels the INVITE for why. sipgo sends a CANCEL unless the cause is
// exactly its force error, which abandons the wait instead.
func (c *Call) stop(cancel context.CancelCauseFunc, why error, force bool) {
	c.stopWhy.Store(&why)
	if force {
		cancel(sipgo.WaitAnswerForceCancelErr)
	} else {
		cancel(why)
	}
}

// failInvite maps the outcome of an unanswered INVITE to the browser.
func (c *Call) failInvite(ctx context.Context, err error, fail func(int, string, string, ...sip.Header)) {
	var dr *sipgo.ErrDialogResponse
	cause := context.Cause(ctx)
	if why := c.stopWhy.Load(); why != nil {
		cause = *why
	}
	switch {
	case errors.As(err, &dr):
		code, reason, endCause := mapFinal(dr.Res)
		c.log.Info("trunk rejected call", "code", dr.Res.StatusCode, "relayed", code)
		var hdrs []sip.Header
		if ra := dr.Res.GetHeader("Retry-After"); ra != nil && code == 503 {
			hdrs = append(hdrs, sip.NewHeader("Retry-After", ra.Value()))
		}
		fail(code, reason, endCause, hdrs...)
	case errors.Is(cause, errBrowserCancel):
		// The transaction layer has already answered the browser with 487.
		c.hangup(cdr.CauseCancelled, 487, "")
	case errors.Is(cause, errInviteTimeout):
		fail(408, "Request Timeout", cdr.CauseUnreachable)
	case errors.Is(cause, errRingTimeout):
		fail(408, "Request Timeout", cdr.CauseNoAnswer)
	case cause != nil:
		// hangup already ran (shutdown); make sure the browser hears of it.
		fail(503, "Service Unavailable", cdr.CauseShutdown)
	default:
		c.log.Warn("trunk invite failed", "err", err)
		fail(503, "Trunk Unreachable", cdr.CauseUnreachable)
	}
}

// mapFinal turns a trunk's final failure into what the browser gets. Most
// codes pass unchanged; those that would make the browser act on the
// trunk's network (redirects, auth challenges for the relay's credentials)
// do not.
func mapFinal(res *sip.Response) (int, string, string) {
	code := int(res.StatusCode)
	switch {
	case code == 486 || code == 600:
		return code, res.Reason, cdr.CauseBusy
	case code == 408 || code == 480:
		return code, res.Reason, cdr.CauseNoAnswer
	case code >= 300 && code < 400:
		return 480, "Temporarily Unavailable", cdr.CauseRejected
	case code == 401 || code == 407:
		return 403, "Forbidden", cdr.CauseRejected
	case code >= 500 && code < 600:
		return 503, "Service Unavailable", cdr.CauseRejected
	case code >= 400 && code < 700:
		return code, res.Reason, cdr.CauseRejected
	}
	return 500, "Server Internal Error", cdr.CauseError
}

// mediaAddr is the address the relay puts in SDP towards trunks when
// the peer's address family is not known.
func (r *Relay) mediaAddr() netip.Addr { return r.mediaAddrFor(netip.Addr{}) }

// mediaAddrFor is the address the relay puts in SDP towards a peer at
// peer: the public (or bound) address of the peer's family when a
// dual-stack relay has one, else its first.
func (r *Relay) mediaAddrFor(peer netip.Addr) netip.Addr {
	cands := r.cfg.Media.PublicAddrs()
	for _, a := range []string{r.cfg.Media.BindIP, r.host} {
		if ip, err := netip.ParseAddr(a); err == nil && !ip.IsUnspecified() {
			cands = append(cands, ip.Unmap())
		}
	}
	if len(cands) == 0 {
		return netip.MustParseAddr("127.0.0.1")
	}
	if peer.IsValid() {
		for _, a := range cands {
			if a.Is4() == peer.Unmap().Is4() {
				return a
			}
		}
	}
	return cands[0]
}
