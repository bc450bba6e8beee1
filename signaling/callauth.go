package signaling

import (
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/registrar"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
	"github.com/mediarelay/mediarelay/signaling/throttle"
)

// authorizeCall decides whether a browser's INVITE may dial route. Calls to
// the built-in echo need nothing; any other call needs a live registration
// on the same WebSocket or valid credentials in Proxy-Authorization (a
// configured user or token credentials), unless sip.anonymous_calls is set.
// It returns the caller's user ("" when anonymous) and false when it has
// answered the INVITE.
func (r *Relay) authorizeCall(req *sip.Request, tx sip.ServerTransaction, route *config.Trunk) (string, bool) {
	if r.echoTrunk != nil && route == r.echoTrunk {
		return "", true
	}
	g := r.registrar
	hasCreds := registrar.HasCallCredentials(req)
	user := ""
	if !hasCreds {
		user = g.UserOn(req.Source())
	}
	if user == "" && (hasCreds || !r.cfg.SIP.AnonymousCalls) {
		if !hasCreds {
			g.CallRejected("challenged")
		}
		if user = g.AuthenticateCall(req, tx); user == "" {
			r.countSetupFailure(407)
			return "", false
		}
	}
	if user != "" && !r.limits.Attempt(user, time.Now()) {
		g.CallRejected("user_call_rate")
		r.log.Warn("call attempts over the user's rate", "user", user, "source", throttle.SourceIP(req.Source()))
		sipleg.Respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "60"))
		r.countSetupFailure(503)
		return "", false
	}
	return user, true
}

// admitUser holds a call slot of c's user for the call's life; false means
// the user is at sip.user_max_calls and the INVITE was answered 403.
func (r *Relay) admitUser(c *Call, req *sip.Request, tx sip.ServerTransaction) bool {
	if c.user == "" {
		return true
	}
	if !r.limits.Acquire(c.user) {
		r.registrar.CallRejected("user_max_calls")
		sipleg.Respond(tx, req, 403, "Forbidden", sip.NewHeader("Warning",
			`399 mediarelay "too many calls in progress for this user (max `+strconv.Itoa(r.limits.MaxCalls())+`)"`))
		r.countSetupFailure(403)
		return false
	}
	c.userHeld = true
	return true
}

// mayTransferToTrunk reports whether a REFER from side of c may make the
// relay dial route: a browser may only when its call was authenticated (a
// call to the echo needs no credentials, so it must not become a way to
// reach a trunk), or anonymous calls are allowed.
func (r *Relay) mayTransferToTrunk(c *Call, from side, route *config.Trunk) bool {
	if from != sideBrowser || r.cfg.SIP.AnonymousCalls || (r.echoTrunk != nil && route == r.echoTrunk) {
		return true
	}
	return c.user != ""
}

// browserUser maps a called user or DID to the user whose browsers ring: a
// configured user, or, with sip.token_secret, a user registered with token
// credentials (who has no entry in the user table).
func (r *Relay) browserUser(target string) (string, bool) {
	if u, ok := r.inb.creds.UserFor(target); ok {
		return u, true
	}
	if r.cfg.SIP.TokenSecret != "" && len(r.registrar.Lookup(target)) > 0 {
		return target, true
	}
	return "", false
}
