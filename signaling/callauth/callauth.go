// Package callauth decides who may place calls through the relay: whether
// a browser's INVITE may dial a trunk (a registration on its WebSocket or
// digest credentials, unless anonymous calls are allowed; the built-in echo
// needs neither), the per-user call rate and call slots, whether a REFER
// from a browser may make the relay dial a trunk, and which user's
// browsers a called name rings. It answers the requests it refuses.
package callauth

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/digest"
	"github.com/mediarelay/mediarelay/signaling/registrar"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
	"github.com/mediarelay/mediarelay/signaling/throttle"
)

// Options are what a Gate decides with.
type Options struct {
	Registrar *registrar.Registrar // browsers' registrations and digest challenges
	Users     *digest.Credentials  // the configured users
	Limits    *throttle.Users      // per-user call rate and call slots
	// Anonymous is sip.anonymous_calls: browsers may call trunks without
	// credentials.
	Anonymous bool
	// TokenSecret is sip.token_secret: users registered with token
	// credentials ring too.
	TokenSecret string
	// IsEcho reports whether a route is the built-in echo endpoint.
	IsEcho func(*config.Trunk) bool
	// Refused counts a call refused with code before it was set up.
	Refused func(code int)
	Log     *slog.Logger
}

// Gate decides, for the relay, who may call whom.
type Gate struct{ o Options }

// New is a gate deciding by o.
func New(o Options) *Gate { return &Gate{o: o} }

// Authorize decides whether a browser's INVITE may dial route. Calls to
// the built-in echo need nothing; any other call needs a live registration
// on the same WebSocket or valid credentials in Proxy-Authorization (a
// configured user or token credentials), unless anonymous calls are
// allowed. It returns the caller's user ("" when anonymous) and false when
// it has answered the INVITE.
func (g *Gate) Authorize(req *sip.Request, tx sip.ServerTransaction, route *config.Trunk) (string, bool) {
	if g.o.IsEcho(route) {
		return "", true
	}
	reg := g.o.Registrar
	hasCreds := registrar.HasCallCredentials(req)
	user := ""
	if !hasCreds {
		user = reg.UserOn(req.Source())
	}
	if user == "" && (hasCreds || !g.o.Anonymous) {
		if !hasCreds {
			reg.CallRejected("challenged")
		}
		if user = reg.AuthenticateCall(req, tx); user == "" {
			g.o.Refused(407)
			return "", false
		}
	}
	if user != "" && !g.o.Limits.Attempt(user, time.Now()) {
		reg.CallRejected("user_call_rate")
		g.o.Log.Warn("call attempts over the user's rate", "user", user, "source", throttle.SourceIP(req.Source()))
		sipleg.Respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "60"))
		g.o.Refused(503)
		return "", false
	}
	return user, true
}

// Admit holds one of user's call slots for a call's life (the caller
// releases it with the Limits' Release); an anonymous call ("") needs
// none. False means the user is at sip.user_max_calls and the INVITE was
// answered 403.
func (g *Gate) Admit(user string, req *sip.Request, tx sip.ServerTransaction) bool {
	if user == "" {
		return true
	}
	if !g.o.Limits.Acquire(user) {
		g.o.Registrar.CallRejected("user_max_calls")
		sipleg.Respond(tx, req, 403, "Forbidden", sip.NewHeader("Warning",
			`399 mediarelay "too many calls in progress for this user (max `+strconv.Itoa(g.o.Limits.MaxCalls())+`)"`))
		g.o.Refused(403)
		return false
	}
	return true
}

// MayTransferToTrunk reports whether a REFER may make the relay dial
// route: one from a browser (fromBrowser) only when its call was
// authenticated as user (a call to the echo needs no credentials, so it
// must not become a way to reach a trunk), or anonymous calls are allowed.
func (g *Gate) MayTransferToTrunk(user string, fromBrowser bool, route *config.Trunk) bool {
	if !fromBrowser || g.o.Anonymous || g.o.IsEcho(route) {
		return true
	}
	return user != ""
}

// BrowserUser maps a called user or DID to the user whose browsers ring: a
// configured user, or, with a token secret, a user registered with token
// credentials (who has no entry in the user table).
func (g *Gate) BrowserUser(target string) (string, bool) {
	if u, ok := g.o.Users.UserFor(target); ok {
		return u, true
	}
	if g.o.TokenSecret != "" && len(g.o.Registrar.Lookup(target)) > 0 {
		return target, true
	}
	return "", false
}
