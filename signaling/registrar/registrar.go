// Package registrar keeps browsers' registrations (RFC 3261 section 10:
// REGISTER over WebSocket, one binding per device) and authenticates
// browsers' requests by digest: REGISTER with 401, INVITEs to trunks with
// 407 (Proxy-Authorization). It locks out a source that keeps sending wrong
// passwords. Calls, ringing and the router stay in signaling, which asks
// the registrar who is registered where.
package registrar

import (
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/digest"
	"github.com/mediarelay/mediarelay/signaling/throttle"
)

// minExpires is the shortest registration the registrar accepts (423
// Interval Too Brief below it, RFC 3261 10.3).
const minExpires = 30 * time.Second

// defaultExpires is used when a REGISTER names no expiry.
const defaultExpires = 10 * time.Minute

// Binding is one registered browser (one device) of a user.
type Binding struct {
	User      string
	Contact   sip.ContactHeader // as the browser sent it
	Key       string            // contact URI, tells devices apart
	Source    string            // WebSocket peer address: where to send requests
	Transport string            // ws or wss
	Expires   time.Time
	callID    string
	cseq      uint32
}

// Registrar keeps browsers' registrations, authenticates REGISTERs and
// browsers' calls, and locks out sources that guess passwords.
type Registrar struct {
	creds     *digest.Credentials
	nonces    *digest.Nonces
	sip       config.SIP
	log       *slog.Logger
	throttled func(*sip.Request, sip.ServerTransaction) bool

	mu       sync.Mutex
	byUser   map[string]map[string]*Binding // user → key → binding
	failures map[string]*failure            // source IP + user → wrong passwords

	rejected     *prometheus.CounterVec // REGISTERs
	callRejected *prometheus.CounterVec // browsers' INVITEs refused by callauth.Gate.Authorize
}

type failure struct {
	n      int
	last   time.Time
	locked time.Time // until
}

// New returns a registrar checking passwords against creds, with the
// limits of cfg (sip.auth_failures, sip.auth_lockout,
// sip.register_max_expires). throttled is asked about every REGISTER that
// comes over a WebSocket and reports whether it has answered it (the
// relay's per-source rate limit). Its counters are registered in m.
func New(creds *digest.Credentials, cfg config.SIP, m *metrics.Relay, log *slog.Logger,
	throttled func(*sip.Request, sip.ServerTransaction) bool) *Registrar {
	return &Registrar{
		creds:     creds,
		nonces:    digest.NewNonces(),
		sip:       cfg,
		log:       log,
		throttled: throttled,
		byUser:    map[string]map[string]*Binding{},
		failures:  map[string]*failure{},
		rejected: m.NewCounterVec("mediarelay_register_rejected_total",
			"REGISTERs refused, by reason (throttled, auth_failed, locked_out, forbidden, expired, replay).", "reason"),
		callRejected: m.NewCounterVec("mediarelay_call_auth_rejected_total",
			"Browser calls refused before any trunk was dialled, by reason (challenged, auth_failed, locked_out, expired, replay, user_max_calls, user_call_rate, transfer).", "reason"),
	}
}

// pruneLocked forgets old failures so the map stays small.
func (g *Registrar) pruneLocked(now time.Time) {
	for k, f := range g.failures {
		if now.After(f.locked) && now.Sub(f.last) > g.sip.AuthLockout {
			delete(g.failures, k)
		}
	}
}

func (g *Registrar) lockedOut(ip, user string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.failures[ip+"\x00"+user]
	return f != nil && now.Before(f.locked)
}

// fail records a wrong password and reports whether the source is now locked out.
func (g *Registrar) fail(ip, user string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := ip + "\x00" + user
	f := g.failures[k]
	if f == nil && len(g.failures) > 100000 {
		g.pruneLocked(now)
	}
	if f == nil || now.Sub(f.last) > g.sip.AuthLockout {
		f = &failure{}
		g.failures[k] = f
	}
	f.n++
	f.last = now
	if f.n >= g.sip.AuthFailures {
		f.locked = now.Add(g.sip.AuthLockout)
		f.n = 0
		return true
	}
	return false
}

func (g *Registrar) succeed(ip, user string) {
	g.mu.Lock()
	delete(g.failures, ip+"\x00"+user)
	g.mu.Unlock()
}

// authKind says how a request is challenged: a registrar's 401 or a
// proxy's 407 (RFC 3261 22.3), and the headers that go with each.
type authKind struct {
	code        int
	reason      string
	challenge   string // header carrying the challenge
	credentials string // header carrying the answer
}

var (
	registrarAuth = authKind{401, "Unauthorized", "WWW-Authenticate", "Authorization"}
	proxyAuth     = authKind{407, "Proxy Authentication Required", "Proxy-Authenticate", "Proxy-Authorization"}
)

// authenticate checks req's credentials, answering it when they do not
// pass. claimed, when not empty, is the user the request must be from (a
// REGISTER's address of record). It returns the authenticated user, or ""
// when it has responded.
func (g *Registrar) authenticate(req *sip.Request, tx sip.ServerTransaction, claimed string, k authKind) string {
	now := time.Now()
	ip := throttle.SourceIP(req.Source())
	rej := g.rejected
	if k.code == proxyAuth.code {
		rej = g.callRejected
	}
	var res digest.Result
	var user string
	if h := req.GetHeader(k.credentials); h != nil {
		res, user = g.creds.Verify(g.nonces, h.Value(), req.Method.String(), nonceBinding(g.creds.Realm(), req), now)
	}
	key := claimed
	if key == "" {
		key = user
	}
	if key != "" && g.lockedOut(ip, key, now) {
		rej.WithLabelValues("locked_out").Inc()
		respond(tx, req, 403, "Forbidden")
		return ""
	}
	switch res {
	case digest.OK:
		if claimed != "" && user != claimed {
			rej.WithLabelValues("forbidden").Inc()
			respond(tx, req, 403, "Forbidden")
			return ""
		}
		g.succeed(ip, user)
		return user
	case digest.Expired:
		rej.WithLabelValues("expired").Inc()
		respond(tx, req, 403, "Forbidden", sip.NewHeader("Warning", `399 mediarelay "credentials expired"`))
		return ""
	case digest.Replay:
		rej.WithLabelValues("replay").Inc()
	case digest.Wrong:
		rej.WithLabelValues("auth_failed").Inc()
		if g.fail(ip, key, now) {
			g.log.Warn("authentication locked out after wrong passwords", "user", key, "source", ip, "method", req.Method.String())
			respond(tx, req, 403, "Forbidden")
			return ""
		}
	}
	g.challenge(req, tx, key, res == digest.Stale || res == digest.Replay, now, k)
	return ""
}

// nonceBinding is what a challenge's nonce is bound to: the realm and the
// connection (WebSocket, TCP or TLS peer; a UDP source address), so a
// captured Authorization is worthless on another connection.
func nonceBinding(realm string, req *sip.Request) string {
	return realm + "\x00" + req.Transport() + "\x00" + req.Source()
}

func (g *Registrar) challenge(req *sip.Request, tx sip.ServerTransaction, user string, stale bool, now time.Time, k authKind) {
	res := sip.NewResponseFromRequest(req, k.code, k.reason, nil)
	for _, c := range digest.Challenges(g.creds.Realm(), g.nonces.Make(nonceBinding(g.creds.Realm(), req), now), stale, g.creds.AlgsFor(user)...) {
		res.AppendHeader(sip.NewHeader(k.challenge, c))
	}
	_ = tx.Respond(res)
}

// HasCallCredentials reports whether a browser's INVITE carries
// Proxy-Authorization for AuthenticateCall to check.
func HasCallCredentials(req *sip.Request) bool {
	return req.GetHeader(proxyAuth.credentials) != nil
}

// AuthenticateCall checks the Proxy-Authorization of a browser's INVITE,
// answering it (407 or 403) when it does not pass. It returns the
// authenticated user, or "" when it has responded.
func (g *Registrar) AuthenticateCall(req *sip.Request, tx sip.ServerTransaction) string {
	return g.authenticate(req, tx, "", proxyAuth)
}

// CallRejected counts a browser's call refused before any trunk was
// dialled, by reason (mediarelay_call_auth_rejected_total).
func (g *Registrar) CallRejected(reason string) {
	g.callRejected.WithLabelValues(reason).Inc()
}

// UserOn returns the user registered over the connection source (a
// WebSocket peer address), or "" when it has no live registration.
func (g *Registrar) UserOn(source string) string {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for user, m := range g.byUser {
		for _, b := range m {
			if b.Source == source && now.Before(b.Expires) {
				return user
			}
		}
	}
	return ""
}

// Register answers a REGISTER: only over WebSocket, within the source's
// rate, from the address of record's own user; it adds, refreshes or
// removes that user's bindings and answers 200 with the live ones.
func (g *Registrar) Register(req *sip.Request, tx sip.ServerTransaction) {
	now := time.Now()
	switch strings.ToLower(req.Transport()) {
	case "ws", "wss":
	default:
		g.rejected.WithLabelValues("forbidden").Inc()
		respond(tx, req, 403, "Forbidden", sip.NewHeader("Warning", `399 mediarelay "browsers register over WebSocket"`))
		return
	}
	if g.throttled(req, tx) {
		g.rejected.WithLabelValues("throttled").Inc()
		return
	}
	to := req.To()
	if to == nil || to.Address.User == "" {
		respond(tx, req, 400, "Bad Request")
		return
	}
	aor := to.Address.User
	user := g.authenticate(req, tx, aor, registrarAuth)
	if user == "" {
		return
	}

	expires := defaultExpires
	if h := req.GetHeader("Expires"); h != nil {
		n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || n < 0 {
			respond(tx, req, 400, "Bad Request")
			return
		}
		expires = time.Duration(n) * time.Second
	}
	contacts := req.GetHeaders("Contact")
	var changes []func()
	for _, h := range contacts {
		if strings.TrimSpace(h.Value()) == "*" {
			if expires != 0 || len(contacts) != 1 {
				respond(tx, req, 400, "Bad Request")
				return
			}
			changes = append(changes, func() { g.removeUser(user) })
			continue
		}
		var ch sip.ContactHeader
		if ct, ok := h.(*sip.ContactHeader); ok {
			ch = *ct.Clone()
		} else if _, err := sip.ParseAddressValue(h.Value(), &ch.Address, &ch.Params); err != nil {
			respond(tx, req, 400, "Bad Request")
			return
		}
		exp := expires
		if ch.Params != nil {
			if v, ok := ch.Params.Get("expires"); ok {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					respond(tx, req, 400, "Bad Request")
					return
				}
				exp = time.Duration(n) * time.Second
			}
		}
		if exp > 0 && exp < minExpires {
			respond(tx, req, 423, "Interval Too Brief", sip.NewHeader("Min-Expires", strconv.Itoa(int(minExpires.Seconds()))))
			return
		}
		exp = min(exp, g.sip.RegisterMaxExpires)
		b := &Binding{
			User: user, Contact: ch, Key: contactKey(ch.Address), Source: req.Source(),
			Transport: strings.ToLower(req.Transport()), Expires: now.Add(exp),
			callID: req.CallID().Value(), cseq: req.CSeq().SeqNo,
		}
		if exp == 0 {
			changes = append(changes, func() { g.remove(user, b.Key) })
		} else {
			changes = append(changes, func() { g.add(b) })
		}
	}
	for _, f := range changes {
		f()
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	for _, b := range g.Lookup(user) {
		c := b.Contact.Clone()
		if c.Params == nil {
			c.Params = sip.NewParams()
		}
		c.Params.Remove("expires")
		c.Params.Add("expires", strconv.Itoa(int(time.Until(b.Expires).Round(time.Second).Seconds())))
		res.AppendHeader(c)
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	_ = tx.Respond(res)
	g.log.Debug("registered", "user", user, "bindings", len(g.Lookup(user)), "source", req.Source())
}

// contactKey names a device: its contact URI without parameters that may
// change between refreshes.
func contactKey(u sip.Uri) string {
	return strings.ToLower(u.User + "@" + u.HostPort())
}

func (g *Registrar) add(b *Binding) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.byUser[b.User]
	if m == nil {
		m = map[string]*Binding{}
		g.byUser[b.User] = m
	}
	if old := m[b.Key]; old != nil && old.callID == b.callID && b.cseq < old.cseq {
		return // out of order
	}
	m[b.Key] = b
}

func (g *Registrar) remove(user, key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.byUser[user]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(g.byUser, user)
		}
	}
}

func (g *Registrar) removeUser(user string) {
	g.mu.Lock()
	delete(g.byUser, user)
	g.mu.Unlock()
}

// Lookup returns user's live bindings, newest expiry first.
func (g *Registrar) Lookup(user string) []*Binding {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*Binding
	for k, b := range g.byUser[user] {
		if now.After(b.Expires) {
			delete(g.byUser[user], k)
			continue
		}
		out = append(out, b)
	}
	if m := g.byUser[user]; m != nil && len(m) == 0 {
		delete(g.byUser, user)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.After(out[j].Expires) })
	return out
}

// ConnClosed drops every registration made over the WebSocket from source.
func (g *Registrar) ConnClosed(source string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for user, m := range g.byUser {
		for k, b := range m {
			if b.Source == source {
				delete(m, k)
				g.log.Debug("registration ended with its websocket", "user", user, "source", source)
			}
		}
		if len(m) == 0 {
			delete(g.byUser, user)
		}
	}
}

// respond answers req with a bodiless response.
func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}
