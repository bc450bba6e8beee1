package signaling

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/signaling/callreg"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// Every SIP request the relay receives enters here. A request outside a
// dialog is a new call (INVITE: from a browser over WebSocket, or from a
// trunk), a registration, or OPTIONS. A request inside a dialog finds the
// join or call it belongs to, and which leg sent it; one that belongs to
// none is answered 481 here and nowhere else.

// routeRequests installs the relay's handlers on its SIP server.
func (r *Relay) routeRequests() {
	r.server.OnInvite(r.onInvite)
	r.server.OnRegister(r.onRegister)
	r.server.OnOptions(r.onOptions)
	for _, m := range []sip.RequestMethod{sip.ACK, sip.BYE, sip.UPDATE, sip.REFER, sip.NOTIFY, sip.INFO} {
		r.server.OnRequest(m, r.inDialog)
	}
	r.server.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		// CANCELs that match an INVITE are handled by the transaction layer.
		sipleg.Respond(tx, req, 481, "Call/Transaction Does Not Exist")
	})
	r.server.OnNoRoute(func(req *sip.Request, tx sip.ServerTransaction) {
		sipleg.Respond(tx, req, 405, "Method Not Allowed")
	})
}

// onInvite takes an INVITE: a re-INVITE in a dialog, or a new call.
func (r *Relay) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		r.inDialog(req, tx)
		return
	}
	r.m.CountRequest(req)
	if r.throttled(req, tx) {
		return
	}
	if r.drain.Draining() { // calls in progress go on, new ones go elsewhere
		sipleg.Respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"),
			sip.NewHeader("Warning", `399 mediarelay "draining"`))
		r.m.CountSetupFailure(503)
		return
	}
	switch strings.ToLower(req.Transport()) {
	case "ws", "wss":
		r.outbound(req, tx) // a browser calls out through a trunk
	default:
		r.inbound(req, tx) // a trunk calls a registered browser
	}
}

func (r *Relay) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); (to == nil || !to.Params.Has("tag")) && r.throttled(req, tx) {
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	_ = tx.Respond(res)
}

// inDialog routes a request inside a dialog to its join or call.
func (r *Relay) inDialog(req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.ACK, sip.BYE:
		// Not in mediarelay_sip_requests_total, as before the router.
	default:
		r.m.CountRequest(req)
	}
	if j, i := r.joins.Find(req); j != nil {
		j.Serve(i, req, tx)
		return
	}
	c, s, ok := r.calls.ForRequest(req)
	switch {
	case ok:
		c.serve(s, req, tx)
	case req.Method == sip.ACK:
		// Nothing answers an ACK.
	case req.Method == sip.NOTIFY:
		sipleg.Respond(tx, req, 481, "Subscription Does Not Exist")
	default:
		sipleg.Respond(tx, req, 481, "Call/Transaction Does Not Exist")
	}
}

// serve takes an in-dialog request from side s of the call.
func (c *Call) serve(s side, req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.INVITE, sip.UPDATE:
		c.onOffer(s, req, tx)
	case sip.ACK:
		c.onAck(s, req, tx)
	case sip.BYE:
		c.onBye(s, req, tx)
	case sip.REFER:
		c.onRefer(s, req, tx)
	case sip.NOTIFY:
		// A peer reporting on a transfer it performs: nothing to do.
		sipleg.Respond(tx, req, 200, "OK")
	case sip.INFO:
		c.onInfo(s, req, tx)
	}
}

// side is a leg of a Call.
type side = callreg.Side

const (
	sideNone    = callreg.None
	sideBrowser = callreg.Browser
	sideTrunk   = callreg.Trunk
)

// throttled reports whether req was over its source's rate
// (signaling/throttle), in which case it has been answered with 503 or
// dropped. Configured trunks' sources are not throttled on SIP transports.
func (r *Relay) throttled(req *sip.Request, tx sip.ServerTransaction) bool {
	return r.srcLimits.Throttled(req, tx, r.isTrunkSource)
}

// isTrunkSource reports whether ip is a configured trunk's address or source.
func (r *Relay) isTrunkSource(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, t := range r.routes.Trunks {
		for _, p := range t.SourcePrefixes() {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// onRegister hands a browser's REGISTER to the registrar.
func (r *Relay) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	r.m.CountRequest(req)
	r.registrar.Register(req, tx)
}

// Registered returns how many devices user has registered (for tests and status).
func (r *Relay) Registered(user string) int { return len(r.registrar.Lookup(user)) }
