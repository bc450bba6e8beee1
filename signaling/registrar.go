package signaling

import (
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mediarelay/mediarelay/signaling/digest"
)

// minExpires is the shortest registration the registrar accepts (423
// Interval Too Brief below it, RFC 3261 10.3).
const minExpires = 30 * time.Second

// defaultExpires is used when a REGISTER names no expiry.
const defaultExpires = 10 * time.Minute

// binding is one registered browser (one device) of a user.
type binding struct {
	user      string
	contact   sip.ContactHeader // as the browser sent it
	key       string            // contact URI, tells devices apart
	source    string            // WebSocket peer address: where to send requests
	transport string            // ws or wss
	expires   time.Time
	callID    string
	cseq      uint32
}

// registrar keeps browsers' registrations, authenticates REGISTERs and
// throttles sources that send too many or guess passwords.
type registrar struct {
	r      *Relay
	creds  *digest.Credentials
	nonces *digest.Nonces

	mu       sync.Mutex
	byUser   map[string]map[string]*binding // user → key → binding
	failures map[string]*failure            // source IP + user → wrong passwords

	rejected     *prometheus.CounterVec // REGISTERs
	callRejected *prometheus.CounterVec // browsers' INVITEs refused by authorizeCall
}

type bucket struct {
	tokens float64
	last   time.Time
}

type failure struct {
	n      int
	last   time.Time
	locked time.Time // until
}

func newRegistrar(r *Relay, creds *digest.Credentials) *registrar {
	return &registrar{
		r:        r,
		creds:    creds,
		nonces:   digest.NewNonces(),
		byUser:   map[string]map[string]*binding{},
		failures: map[string]*failure{},
		rejected: r.m.NewCounterVec("mediarelay_register_rejected_total",
			"REGISTERs refused, by reason (throttled, auth_failed, locked_out, forbidden, expired, replay).", "reason"),
		callRejected: r.m.NewCounterVec("mediarelay_call_auth_rejected_total",
			"Browser calls refused before any trunk was dialled, by reason (challenged, auth_failed, locked_out, expired, replay, user_max_calls, user_call_rate, transfer).", "reason"),
	}
}

func sourceIP(src string) string {
	h, _, err := net.SplitHostPort(src)
	if err != nil {
		return src
	}
	return h
}

// pruneLocked forgets old failures so the map stays small.
func (g *registrar) pruneLocked(now time.Time) {
	for k, f := range g.failures {
		if now.After(f.locked) && now.Sub(f.last) > g.r.cfg.SIP.AuthLockout {
			delete(g.failures, k)
		}
	}
}

func (g *registrar) lockedOut(ip, user string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.failures[ip+"\x00"+user]
	return f != nil && now.Before(f.locked)
}

// fail records a wrong password and reports whether the source is now locked out.
func (g *registrar) fail(ip, user string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := ip + "\x00" + user
	f := g.failures[k]
	if f == nil && len(g.failures) > 100000 {
		g.pruneLocked(now)
	}
	if f == nil || now.Sub(f.last) > g.r.cfg.SIP.AuthLockout {
		f = &failure{}
		g.failures[k] = f
	}
	f.n++
	f.last = now
	if f.n >= g.r.cfg.SIP.AuthFailures {
		f.locked = now.Add(g.r.cfg.SIP.AuthLockout)
		f.n = 0
		return true
	}
	return false
}

func (g *registrar) succeed(ip, user string) {
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
func (g *registrar) authenticate(req *sip.Request, tx sip.ServerTransaction, claimed string, k authKind) string {
	now := time.Now()
	ip := sourceIP(req.Source())
	rej := g.rejected
	if k.code == proxyAuth.code {
		rej = g.callRejected
	}
	var res digest.Result
	var user string
	if h := req.GetHeader(k.credentials); h != nil {
		res, user = g.creds.Verify(g.nonces, h.Value(), req.Method.String(), nonceBinding(g.creds.Realm(), req), now)
	}
	key := firstNonEmpty(claimed, user)
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
			g.r.log.Warn("authentication locked out after wrong passwords", "user", key, "source", ip, "method", req.Method.String())
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

func (g *registrar) challenge(req *sip.Request, tx sip.ServerTransaction, user string, stale bool, now time.Time, k authKind) {
	res := sip.NewResponseFromRequest(req, k.code, k.reason, nil)
	for _, c := range digest.Challenges(g.creds.Realm(), g.nonces.Make(nonceBinding(g.creds.Realm(), req), now), stale, g.creds.AlgsFor(user)...) {
		res.AppendHeader(sip.NewHeader(k.challenge, c))
	}
	_ = tx.Respond(res)
}

// userOn returns the user registered over the connection source (a
// WebSocket peer address), or "" when it has no live registration.
func (g *registrar) userOn(source string) string {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for user, m := range g.byUser {
		for _, b := range m {
			if b.source == source && now.Before(b.expires) {
				return user
			}
		}
	}
	return ""
}

func (r *Relay) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	r.countRequest(req)
	g := r.registrar
	now := time.Now()
	switch strings.ToLower(req.Transport()) {
	case "ws", "wss":
	default:
		g.rejected.WithLabelValues("forbidden").Inc()
		respond(tx, req, 403, "Forbidden", sip.NewHeader("Warning", `399 mediarelay "browsers register over WebSocket"`))
		return
	}
	if r.throttled(req, tx) {
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
		exp = min(exp, r.cfg.SIP.RegisterMaxExpires)
		b := &binding{
			user: user, contact: ch, key: contactKey(ch.Address), source: req.Source(),
			transport: strings.ToLower(req.Transport()), expires: now.Add(exp),
			callID: req.CallID().Value(), cseq: req.CSeq().SeqNo,
		}
		if exp == 0 {
			changes = append(changes, func() { g.remove(user, b.key) })
		} else {
			changes = append(changes, func() { g.add(b) })
		}
	}
	for _, f := range changes {
		f()
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	for _, b := range g.lookup(user) {
		c := b.contact.Clone()
		if c.Params == nil {
			c.Params = sip.NewParams()
		}
		c.Params.Remove("expires")
		c.Params.Add("expires", strconv.Itoa(int(time.Until(b.expires).Round(time.Second).Seconds())))
		res.AppendHeader(c)
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	_ = tx.Respond(res)
	r.log.Debug("registered", "user", user, "bindings", len(g.lookup(user)), "source", req.Source())
}

// contactKey names a device: its contact URI without parameters that may
// change between refreshes.
func contactKey(u sip.Uri) string {
	return strings.ToLower(u.User + "@" + u.HostPort())
}

func (g *registrar) add(b *binding) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.byUser[b.user]
	if m == nil {
		m = map[string]*binding{}
		g.byUser[b.user] = m
	}
	if old := m[b.key]; old != nil && old.callID == b.callID && b.cseq < old.cseq {
		return // out of order
	}
	m[b.key] = b
}

func (g *registrar) remove(user, key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.byUser[user]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(g.byUser, user)
		}
	}
}

func (g *registrar) removeUser(user string) {
	g.mu.Lock()
	delete(g.byUser, user)
	g.mu.Unlock()
}

// lookup returns user's live bindings, newest expiry first.
func (g *registrar) lookup(user string) []*binding {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*binding
	for k, b := range g.byUser[user] {
		if now.After(b.expires) {
			delete(g.byUser[user], k)
			continue
		}
		out = append(out, b)
	}
	if m := g.byUser[user]; m != nil && len(m) == 0 {
		delete(g.byUser, user)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].expires.After(out[j].expires) })
	return out
}

// connClosed drops every registration made over the WebSocket from source.
func (g *registrar) connClosed(source string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for user, m := range g.byUser {
		for k, b := range m {
			if b.source == source {
				delete(m, k)
				g.r.log.Debug("registration ended with its websocket", "user", user, "source", source)
			}
		}
		if len(m) == 0 {
			delete(g.byUser, user)
		}
	}
}

// Registered returns how many devices user has registered (for tests and status).
func (r *Relay) Registered(user string) int { return len(r.registrar.lookup(user)) }
