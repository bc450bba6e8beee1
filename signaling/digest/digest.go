// Package digest is SIP digest authentication (RFC 3261 section 22, with
// SHA-256 from RFC 8760): the user table (configured users, sip.users_file
// and time-limited token credentials), nonces bound to where they were
// issued and never accepted twice, and the check of an Authorization
// header. The registrar (browsers' REGISTERs and INVITEs) and the inbound
// side (trunks that authenticate) both use it; it knows nothing of SIP
// transactions or responses.
package digest

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/token"
)

// Digest algorithms the registrar offers, strongest first (RFC 8760).
const (
	algSHA256 = "SHA-256"
	algMD5    = "MD5"
)

// nonceLifetime bounds how long a challenge's nonce is accepted; older
// ones get a fresh challenge with stale=true.
const nonceLifetime = 5 * time.Minute

func newHash(alg string) hash.Hash {
	if strings.EqualFold(alg, algSHA256) {
		return sha256.New()
	}
	return md5.New()
}

func hexHash(alg string, parts ...string) string {
	h := newHash(alg)
	h.Write([]byte(strings.Join(parts, ":")))
	return hex.EncodeToString(h.Sum(nil))
}

// credential is what the relay knows of one user: HA1 per algorithm.
type credential struct {
	name string
	ha1  map[string]string // algorithm → hex HA1
}

// Credentials is a user table: from the config's users and users_file
// (LoadCredentials), or the trunks that authenticate (NewCredentials and
// AddPassword).
type Credentials struct {
	realm string
	algs  []string // accepted algorithms; empty means both
	users map[string]*credential
	dids  map[string]string // normalised number → user
	// tokenSecret, when set, admits "EXPIRY:USER" usernames whose password
	// is base64(HMAC-SHA1(tokenSecret, username)) (pkg/token).
	tokenSecret string
}

// LoadCredentials builds the browsers' user table from sip.realm,
// sip.digest_algorithms, sip.token_secret, users and sip.users_file. The
// realm is taken as the config has it: config.Load fills an empty one with
// config.DefaultRealm.
func LoadCredentials(cfg config.Config) (*Credentials, error) {
	c := NewCredentials(cfg.SIP.Realm)
	c.tokenSecret = cfg.SIP.TokenSecret
	for _, a := range cfg.SIP.DigestAlgorithms {
		c.algs = append(c.algs, canonicalAlg(a))
	}
	for _, u := range cfg.Users {
		cr := &credential{name: u.Name, ha1: map[string]string{}}
		if u.Password != "" {
			cr.ha1[algMD5] = hexHash(algMD5, u.Name, c.realm, u.Password)
			cr.ha1[algSHA256] = hexHash(algSHA256, u.Name, c.realm, u.Password)
		}
		if u.HA1MD5 != "" {
			cr.ha1[algMD5] = strings.ToLower(u.HA1MD5)
		}
		if u.HA1SHA256 != "" {
			cr.ha1[algSHA256] = strings.ToLower(u.HA1SHA256)
		}
		c.users[u.Name] = cr
		for _, d := range u.DIDs {
			c.dids[config.NormalizeNumber(d)] = u.Name
		}
	}
	if cfg.SIP.UsersFile != "" {
		if err := c.loadFile(cfg.SIP.UsersFile); err != nil {
			return nil, fmt.Errorf("sip.users_file: %w", err)
		}
	}
	return c, nil
}

// NewCredentials returns an empty user table for realm, accepting both
// algorithms.
func NewCredentials(realm string) *Credentials {
	return &Credentials{realm: realm, users: map[string]*credential{}, dids: map[string]string{}}
}

// AddPassword adds user name with password, hashed for both algorithms.
func (c *Credentials) AddPassword(name, password string) {
	c.users[name] = &credential{name: name, ha1: map[string]string{
		algMD5:    hexHash(algMD5, name, c.realm, password),
		algSHA256: hexHash(algSHA256, name, c.realm, password),
	}}
}

// Realm is the realm the table's hashes are for.
func (c *Credentials) Realm() string { return c.realm }

// loadFile reads "name:realm:ha1" lines; the HA1's length says its algorithm.
func (c *Credentials) loadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 || parts[0] == "" {
			return fmt.Errorf("%s:%d: want name:realm:ha1", path, n)
		}
		name, realm, ha1 := parts[0], parts[1], strings.ToLower(parts[2])
		if realm != c.realm {
			return fmt.Errorf("%s:%d: realm %q is not sip.realm %q", path, n, realm, c.realm)
		}
		var alg string
		switch _, err := hex.DecodeString(ha1); {
		case err != nil:
			return fmt.Errorf("%s:%d: ha1 is not hex", path, n)
		case len(ha1) == 32:
			alg = algMD5
		case len(ha1) == 64:
			alg = algSHA256
		default:
			return fmt.Errorf("%s:%d: ha1 is neither MD5 (32 hex digits) nor SHA-256 (64)", path, n)
		}
		cr := c.users[name]
		if cr == nil {
			cr = &credential{name: name, ha1: map[string]string{}}
			c.users[name] = cr
		}
		cr.ha1[alg] = ha1
	}
	return sc.Err()
}

// UserFor maps a called user or DID to a registered user name.
func (c *Credentials) UserFor(target string) (string, bool) {
	if _, ok := c.users[target]; ok {
		return target, true
	}
	if n := config.NormalizeNumber(target); n != "" {
		if u, ok := c.dids[n]; ok {
			return u, true
		}
		if u, ok := c.dids["+"+strings.TrimPrefix(n, "+")]; ok {
			return u, true
		}
		if u, ok := c.dids[strings.TrimPrefix(n, "+")]; ok {
			return u, true
		}
	}
	return "", false
}

// Nonces makes nonces: a timestamp and an HMAC over it and what the
// nonce is bound to (the realm and the client's connection, or its IP), so
// a nonce is only good where it was issued. It remembers the highest
// nonce-count accepted for each nonce, so a captured Authorization cannot
// be replayed.
type Nonces struct {
	key [32]byte

	mu   sync.Mutex
	used map[string]usedNonce
}

type usedNonce struct {
	nc     uint64
	issued time.Time
}

// maxUsedNonces bounds the replay memory; beyond it the oldest half is
// dropped early (their owners get a fresh challenge, stale=true).
const maxUsedNonces = 200000

// NewNonces returns a nonce maker with a fresh random key.
func NewNonces() *Nonces {
	n := &Nonces{used: map[string]usedNonce{}}
	_, _ = rand.Read(n.key[:])
	return n
}

// use records that nonce was answered with nonce-count nc (hex, with
// qop=auth; "" without qop, when a nonce is good once) and reports false
// for a replay: a count not above the highest seen for it.
func (n *Nonces) use(nonce, qop, nc string, now time.Time) bool {
	var count uint64 = 1
	if qop != "" {
		c, err := strconv.ParseUint(nc, 16, 64)
		if err != nil || c == 0 {
			return false
		}
		count = c
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if u, ok := n.used[nonce]; ok && count <= u.nc {
		return false
	}
	if len(n.used) >= maxUsedNonces {
		n.pruneLocked(now)
	}
	n.used[nonce] = usedNonce{nc: count, issued: now}
	return true
}

// pruneLocked forgets nonces past their lifetime (check refuses them
// anyway), and, if that is not enough, the older half.
func (n *Nonces) pruneLocked(now time.Time) {
	for k, u := range n.used {
		if now.Sub(u.issued) > nonceLifetime {
			delete(n.used, k)
		}
	}
	if len(n.used) < maxUsedNonces/2 {
		return
	}
	cut := now.Add(-nonceLifetime / 2)
	for k, u := range n.used {
		if u.issued.Before(cut) {
			delete(n.used, k)
		}
	}
}

// Make returns a new nonce bound to bind.
func (n *Nonces) Make(bind string, now time.Time) string {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	m := hmac.New(sha256.New, n.key[:])
	m.Write(b[:8])
	m.Write([]byte(bind))
	copy(b[8:], m.Sum(nil)[:16])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// check reports whether nonce is one of ours for bind, and whether it is too old.
func (n *Nonces) check(nonce, bind string, now time.Time) (ok, stale bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false, false
	}
	m := hmac.New(sha256.New, n.key[:])
	m.Write(b[:8])
	m.Write([]byte(bind))
	if !hmac.Equal(m.Sum(nil)[:16], b[8:]) {
		return false, false
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	return true, now.Sub(issued) > nonceLifetime || issued.After(now.Add(time.Minute))
}

// AlgsFor lists the algorithms to challenge user with: those accepted that
// the user has a stored hash for, so that a user kept only as an MD5 HA1
// is not asked for a SHA-256 response it can never pass. An unknown user
// gets every accepted algorithm, which tells a prober nothing.
func (c *Credentials) AlgsFor(user string) []string {
	accepted := c.algs
	if len(accepted) == 0 {
		accepted = []string{algSHA256, algMD5}
	}
	cr := c.users[user]
	if cr == nil {
		return accepted
	}
	var out []string
	for _, a := range accepted {
		if cr.ha1[a] != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return accepted
	}
	return out
}

// Challenges returns the WWW-Authenticate (or Proxy-Authenticate) values: SHA-256 first, then MD5
// for clients that know no better (RFC 8760 section 2.4).
func Challenges(realm, nonce string, stale bool, algs ...string) []string {
	var out []string
	if len(algs) == 0 {
		algs = []string{algSHA256, algMD5}
	}
	for _, alg := range algs {
		alg = canonicalAlg(alg)
		v := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"`, realm, nonce, alg)
		if stale {
			v += ", stale=true"
		}
		out = append(out, v)
	}
	return out
}

func canonicalAlg(a string) string {
	if strings.EqualFold(a, algSHA256) {
		return algSHA256
	}
	return algMD5
}

// parseDigest reads the parameters of an Authorization: Digest header.
func parseDigest(v string) (map[string]string, bool) {
	v = strings.TrimSpace(v)
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return nil, false
	}
	out := map[string]string{}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			break
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, false
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
					b.WriteByte(s[i])
					continue
				}
				if s[i] == '"' {
					break
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, false
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := out[key]; dup {
			return nil, false
		}
		out[key] = val
	}
	return out, true
}

// Result is the outcome of checking an Authorization header.
type Result int

const (
	Missing Result = iota // no usable credentials: challenge
	Stale                 // right password, old nonce: challenge with stale=true
	Wrong                 // wrong password or unknown user
	Expired               // time-limited credentials past their expiry: 403
	Replay                // right password, nonce-count already used: challenge anew (stale=true)
	OK                    // right password, fresh nonce
)

// lookup finds the credential for a digest username: a configured user,
// else token credentials (pkg/token) when a secret is configured. identity
// is who the caller is: the username, or a token's USER part.
func (c *Credentials) lookup(username string, now time.Time) (cr *credential, identity string, expired bool) {
	if cr := c.users[username]; cr != nil {
		return cr, username, false
	}
	if c.tokenSecret == "" {
		return nil, username, false
	}
	exp, user, err := token.Parse(username)
	if err != nil {
		return nil, username, false
	}
	if !now.Before(exp) {
		return nil, user, true
	}
	pw := token.Password(c.tokenSecret, username)
	return &credential{name: username, ha1: map[string]string{
		algMD5:    hexHash(algMD5, username, c.realm, pw),
		algSHA256: hexHash(algSHA256, username, c.realm, pw),
	}}, user, false
}

// Verify checks an Authorization value for method against the user table,
// with a nonce n made for bind. The string is who the caller is: the
// username, a token's user, or "" when the header names none.
func (c *Credentials) Verify(n *Nonces, auth, method, bind string, now time.Time) (Result, string) {
	p, ok := parseDigest(auth)
	if !ok {
		return Missing, ""
	}
	user := p["username"]
	if p["realm"] != c.realm || p["nonce"] == "" || p["response"] == "" || user == "" {
		return Missing, user
	}
	alg := p["algorithm"]
	if alg == "" {
		alg = algMD5
	}
	switch {
	case strings.EqualFold(alg, algMD5):
		alg = algMD5
	case strings.EqualFold(alg, algSHA256):
		alg = algSHA256
	default:
		return Missing, user
	}
	if len(c.algs) > 0 && !slices.Contains(c.algs, alg) {
		return Missing, user // not offered: challenge again
	}
	nonceOK, stale := n.check(p["nonce"], bind, now)
	if !nonceOK {
		return Missing, user
	}
	cr, identity, expired := c.lookup(user, now)
	if expired {
		return Expired, identity
	}
	if cr == nil {
		return Wrong, user
	}
	ha1 := cr.ha1[alg]
	if ha1 == "" {
		// A stored hash of the other algorithm cannot check this response.
		return Missing, user
	}
	ha2 := hexHash(alg, method, p["uri"])
	var want string
	switch p["qop"] {
	case "auth":
		want = hexHash(alg, ha1, p["nonce"], p["nc"], p["cnonce"], "auth", ha2)
	case "":
		want = hexHash(alg, ha1, p["nonce"], ha2)
	default:
		return Missing, user
	}
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(p["response"])), []byte(want)) != 1 {
		return Wrong, user
	}
	if stale {
		return Stale, identity
	}
	if !n.use(p["nonce"], p["qop"], p["nc"], now) {
		return Replay, identity
	}
	return OK, identity
}
