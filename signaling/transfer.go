package signaling

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/callmedia"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
	"github.com/mediarelay/mediarelay/signaling/sipsrtp"
)

// Blind transfer (RFC 3515): the trunk leg sends REFER with Refer-To; the
// relay calls the target itself, on the same media port and codec, and
// swaps it in for the trunk leg, reporting progress with NOTIFY
// (message/sipfrag). The browser stays in the call.

// onRefer takes a REFER from side s: the relay performs the transfer
// itself (blind, attended, to a trunk or to a registered user).
func (c *Call) onRefer(s side, req *sip.Request, tx sip.ServerTransaction) {
	r := c.r
	if c.answerTime().IsZero() {
		sipleg.Respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	if c.media.Plan().Mode == mediaplan.ModeE2E {
		// A new party would need its own end-to-end handshake with the
		// one that stays, which the relay cannot start in their place.
		sipleg.Respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 mediarelay "no transfers on end-to-end calls"`))
		return
	}
	target, ok := sipleg.ReferTarget(req, tx)
	if !ok {
		return
	}
	rep, hasReplaces, repOK := sipleg.ReferReplaces(target)
	if hasReplaces && !repOK {
		sipleg.Respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 mediarelay "malformed Replaces in Refer-To"`))
		return
	}
	// What the relay will do, decided before it accepts the REFER.
	var run func(old sipleg.DialogRef)
	switch {
	case s == sideTrunk:
		// The trunk hands the browser on. With Replaces (attended transfer
		// inside the trunk's network) the INVITE to the target carries it,
		// and the target's side swaps its consultation call for ours.
		var extra []sip.Header
		if hasReplaces {
			extra = append(extra, sip.NewHeader("Replaces", rep.String()))
		}
		run = func(old sipleg.DialogRef) { c.transferTrunk(old, target.User, extra...) }
	case hasReplaces:
		// Attended transfer: the browser connects the trunk peers of two
		// of its calls, the one named by Replaces and this one.
		run = func(old sipleg.DialogRef) { c.transferAttended(old, rep) }
	default:
		if _, ok := r.auth.BrowserUser(target.User); ok {
			run = func(old sipleg.DialogRef) { c.transferBrowser(old, target.User) }
		} else if route := r.route(target.User); route != nil {
			if !r.auth.MayTransferToTrunk(c.user, s == sideBrowser, route) {
				r.registrar.CallRejected("transfer")
				sipleg.Respond(tx, req, 403, "Forbidden", sip.NewHeader("Warning", `399 mediarelay "transfer to a trunk needs an authenticated caller"`))
				return
			}
			run = func(old sipleg.DialogRef) { c.transferToTrunk(old, route, target.User) }
		} else {
			sipleg.Respond(tx, req, 603, "Decline", sip.NewHeader("Warning", `399 mediarelay "transfer target is neither a registered user nor routable"`))
			return
		}
	}
	old, err := c.legNow(s).Ref()
	if err != nil {
		sipleg.Respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	res := sip.NewResponseFromRequest(req, 202, "Accepted", nil)
	res.AppendHeader(c.contact(s))
	if err := tx.Respond(res); err != nil {
		return
	}
	go run(old)
}

// transferTrunk replaces the trunk leg with a call to user on a new media
// leg, keyed by the target trunk's own SRTP policy; extra headers
// (Replaces) go on the INVITE.
func (c *Call) transferTrunk(old sipleg.DialogRef, user string, extra ...sip.Header) {
	r := c.r
	old.NotifyRefer(c.log, "100 Trying", false)
	route := r.route(user)
	if route == nil {
		old.NotifyRefer(c.log, "404 Not Found", true)
		return
	}
	fromUser := c.to
	if c.direction == "outbound" {
		fromUser = c.from
	}
	ctx, cancel := untilEnded(c.ended, ringTimeout)
	defer cancel()
	plan := c.media.Plan()
	leg, status := r.dialTrunk(ctx, route, user, fromUser, plan.SIPCodec, plan.SIPDTMF, dialOptions{owner: c, extra: extra})
	if leg == nil {
		c.log.Info("transfer failed", "target", user, "status", status)
		old.NotifyRefer(c.log, status, true)
		return
	}
	oldLeg, ok := c.swapSIPLeg(leg)
	if !ok {
		leg.Drop()
		return
	}
	_ = oldLeg.RTP().Close() // the media has moved; the dialog waits for the NOTIFY
	c.log.Info("transferred", "target", user, "trunk", route.Name)
	old.NotifyRefer(c.log, "200 OK", true)
	oldLeg.Drop()
}

// swapSIPLeg puts leg (a dialog and media leg that dialTrunk set up) in
// place of the call's trunk leg, and returns the old one for the caller to
// hang up. Both directions of the media move to the new leg without a new
// stream towards the browser. It reports false when the call has ended.
func (c *Call) swapSIPLeg(leg *sipleg.Leg) (*sipleg.Leg, bool) {
	c.mid.mu.Lock()
	defer c.mid.mu.Unlock()
	if !c.media.Started() {
		return nil, false
	}
	old, ok := c.replaceLeg(sideTrunk, leg)
	if !ok {
		return nil, false
	}
	c.sec.Set(sipsrtp.Outcome(leg.Security()))
	c.setDir(sideTrunk, "sendrecv")
	// Both directions move to the new leg: the browser-bound one carries
	// on its stream; the trunk-bound one writes to the new leg.
	ptime := leg.Route().Ptime
	if _, ans, err := sdp.Parse(leg.PeerAnswer()); err == nil {
		ptime = callmedia.Ptime(ans, leg.Route())
	}
	codec, ev := leg.Codecs()
	c.media.SwapTrunk(old.RTP(), leg.RTP(), codec, ev, ptime)
	old.StopSessionTimer()
	leg.AdoptSessionTimer(c.log, c.sessionExpired)
	leg.ArmSessionTimer()
	return old, true
}

// untilEnded is a context for ringing a transfer target: done after d, or
// when ended (the call or join being transferred) closes.
func untilEnded(ended <-chan struct{}, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-ended:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// inviteTrunk calls user through route with an SDP offer and waits for
// the answer (answering digest challenges with the trunk's credentials).
// It returns the ACKed dialog, or nil and a status line for a NOTIFY.
func (r *Relay) inviteTrunk(ctx context.Context, route *config.Trunk, user, fromUser string, body []byte, extra ...sip.Header) (*sipgo.DialogClientSession, string) {
	recipient := route.RequestURI(user)
	from := &sip.FromHeader{Address: sip.Uri{User: formatNumber(route, fromUser), Host: r.host}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := &sip.ToHeader{Address: sip.Uri{User: user, Host: recipient.Host}}
	hdrs := append([]sip.Header{from, to, sip.NewHeader("Content-Type", "application/sdp")}, extra...)
	dcs, err := r.trunkUA.forTrunk(route).Invite(ctx, *recipient, body, hdrs...)
	if err == nil {
		err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{Username: route.Username, Password: route.Password})
	}
	if err != nil {
		var dr *sipgo.ErrDialogResponse
		if errors.As(err, &dr) {
			return nil, fmt.Sprintf("%d %s", dr.Res.StatusCode, dr.Res.Reason)
		}
		if ctx.Err() != nil {
			return nil, "487 Request Terminated"
		}
		return nil, "503 Service Unavailable"
	}
	if err := dcs.Ack(ctx); err != nil {
		bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = dcs.Bye(bctx)
		return nil, "503 Service Unavailable"
	}
	return dcs, ""
}
