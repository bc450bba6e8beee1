package signaling

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Session timers (RFC 4028) on the trunk leg.
const endSessionTime = "session_expired"

// minSE is the shortest session interval the relay accepts (RFC 4028's
// 90 s; a variable so tests can shorten it).
var minSE = 90 * time.Second

// midCallState is what changes during a call: hold, SDP versions, the
// session timer.
type midCallState struct {
	mu sync.Mutex // serialises offers and answers on the call
	// offering[s]: a re-INVITE of ours to side s is outstanding (mu is not
	// held meanwhile); an offer from s then is glare (491), one from the
	// other side is not.
	offering  [3]bool
	offerDone *sync.Cond // on mu; made on first use

	held    atomic.Bool  // either side has put the call on hold
	resumed atomic.Int64 // unix ns of the last resume (media timeout baseline)
	// Directions as each side last asked for them.
	trunkDir, browserDir string
	sipVer, webVer       uint64

	seMu      sync.Mutex
	seTimer   *time.Timer
	se        time.Duration
	refresher string // uac or uas, as seen by the trunk's dialog
}

func (c *Call) onHold() bool { return c.mid.held.Load() }

// mediaSince is when the media timeout starts counting: the answer, or the
// last resume from hold.
func (c *Call) mediaSince() time.Time {
	since := c.answered
	if ns := c.mid.resumed.Load(); ns != 0 {
		if t := time.Unix(0, ns); t.After(since) {
			since = t
		}
	}
	return since
}

func (r *Relay) registerMidCall() {
	r.server.OnUpdate(r.onUpdate)
	r.server.OnRefer(r.onRefer)   // transfer.go
	r.server.OnNotify(r.onNotify) // transfer.go
	r.server.OnInfo(r.onInfo)     // dtmf.go
}

// normDir reads an SDP's direction; a 0.0.0.0 connection address is the
// old (RFC 2543) way to say inactive.
func normDir(a sdp.Audio) string {
	if a.Addr.IsValid() && a.Addr.IsUnspecified() {
		return "inactive"
	}
	if a.Direction == "" {
		return "sendrecv"
	}
	return a.Direction
}

// combined is what the relay tells one side when the other asked for dir:
// the relay forwards exactly what it gets.
func (m *midCallState) setDir(s side, dir string) (changed bool) {
	if s == sideTrunk {
		changed = m.trunkDir != dir && !(m.trunkDir == "" && dir == "sendrecv")
		m.trunkDir = dir
	} else {
		changed = m.browserDir != dir && !(m.browserDir == "" && dir == "sendrecv")
		m.browserDir = dir
	}
	held := (m.trunkDir != "" && m.trunkDir != "sendrecv") || (m.browserDir != "" && m.browserDir != "sendrecv")
	if m.held.Swap(held) && !held {
		m.resumed.Store(time.Now().UnixNano())
	}
	return changed
}

// onReInvite handles an in-dialog INVITE from either side: hold, resume,
// a moved address, or a session refresh. The offering side gets its answer
// at once; the other side gets an offer of the new direction afterwards.
func (r *Relay) onReInvite(req *sip.Request, tx sip.ServerTransaction) {
	c, s := r.callAndSide(req)
	if c == nil || c.answered.IsZero() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	body, code, fwd := c.offerIn(s, req)
	if code != 200 {
		respond(tx, req, code, statusText(code))
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if s == sideTrunk {
		c.refreshSessionTimer(req, res)
	}
	c.addContact(s, res)
	if err := tx.Respond(res); err != nil {
		return
	}
	if fwd != "" {
		go c.offerOut(otherSide(s), fwd)
	}
}

// onUpdate handles UPDATE (RFC 3311): an offer without a new transaction
// of INVITE, or (without a body) a session refresh.
func (r *Relay) onUpdate(req *sip.Request, tx sip.ServerTransaction) {
	r.countRequest(req)
	if r.joinRequest(req, tx) { // join.go
		return
	}
	c, s := r.callAndSide(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	var res *sip.Response
	fwd := ""
	if len(req.Body()) == 0 {
		res = sip.NewResponseFromRequest(req, 200, "OK", nil)
	} else {
		body, code, f := c.offerIn(s, req)
		if code != 200 {
			respond(tx, req, code, statusText(code))
			return
		}
		fwd = f
		res = sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	if s == sideTrunk {
		c.refreshSessionTimer(req, res)
	}
	c.addContact(s, res)
	if err := tx.Respond(res); err != nil {
		return
	}
	if fwd != "" {
		go c.offerOut(otherSide(s), fwd)
	}
}

func otherSide(s side) side {
	if s == sideTrunk {
		return sideBrowser
	}
	return sideTrunk
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 488:
		return "Not Acceptable Here"
	case 491:
		return "Request Pending"
	}
	return "Error"
}

// addContact puts the relay's Contact for side on a 2xx.
func (c *Call) addContact(s side, res *sip.Response) {
	if res.Contact() != nil {
		return
	}
	if s == sideTrunk && c.route != nil {
		// The trunk's dialog runs over TLS when its trunk does: the Contact
		// must say so, or in-dialog requests would fall back to plain UDP.
		res.AppendHeader(sip.HeaderClone(&c.r.dialogUAFor(c.route).ContactHDR))
	} else if s == sideTrunk {
		res.AppendHeader(sip.HeaderClone(&c.r.trunkUA.ContactHDR))
	} else {
		res.AppendHeader(sip.HeaderClone(&c.r.browserUA.ContactHDR))
	}
}

// offerIn takes an offer from side s. It returns the answer body, a
// status code, and the direction to offer the other side ("" when the
// direction did not change).
func (c *Call) offerIn(s side, req *sip.Request) (string, int, string) {
	c.mid.mu.Lock()
	defer c.mid.mu.Unlock()
	if c.mid.offering[s] {
		return "", 491, "" // an offer of ours to s is outstanding: glare
	}
	if len(req.Body()) == 0 {
		// Late offer in a re-INVITE: we offer what we have; the ACK answers.
		return c.localSDP(s, c.currentDir(s)), 200, ""
	}
	_, a, err := sdp.Parse(req.Body())
	if err != nil {
		return "", 400, ""
	}
	dir := normDir(a)
	if s == sideBrowser {
		// WebRTC SDP always says c=0.0.0.0 (ICE decides); only the
		// attribute counts.
		dir = firstNonEmpty(a.Direction, "sendrecv")
	}
	if s == sideTrunk {
		// A new codec or new payload types: the relay re-plumbs the media
		// and the browser keeps its codec (codecchange.go). What it cannot
		// join to the browser's codec gets 488, and the call goes on as it was.
		if err := c.followTrunkOffer(a); err != nil {
			c.log.Info("trunk's mid-call offer refused", "err", err)
			return "", 488, ""
		}
		c.setRemote(a) // a moved address (or port) takes effect now
	}
	changed := c.mid.setDir(s, dir)
	ans := c.localSDP(s, sdp.AnswerDirection(dir))
	if changed {
		return ans, 200, dir
	}
	return ans, 200, ""
}

// currentDir is the direction the relay last used towards s.
func (c *Call) currentDir(s side) string {
	other := c.mid.browserDir
	if s == sideBrowser {
		other = c.mid.trunkDir
	}
	if other == "" {
		return "sendrecv"
	}
	return other
}

// localSDP is the relay's SDP towards side s with direction dir and a new
// version: the session it established, rewritten; towards the trunk, with
// the codecs of the current plan.
func (c *Call) localSDP(s side, dir string) string {
	var base string
	var ver *uint64
	setup := ""
	if s == sideTrunk {
		ver = &c.mid.sipVer
		switch {
		case c.trunkSDP != "":
			base = c.trunkSDP
		case c.inTrunk != nil:
			base = c.answerSDP
		case c.trunk != nil:
			base = string(c.trunk.InviteRequest.Body())
			if c.currentPlan().Mode == ModeE2E {
				// Our offer said actpass for the browser; the trunk's
				// answer settled the roles, which later SDP must keep.
				setup = e2eSettledSetup(c.trunk.InviteResponse)
			}
		}
	} else {
		ver = &c.mid.webVer
		switch {
		case c.browser != nil:
			base = c.answerSDP
		case c.web != nil:
			base = c.web.LocalSDP()
			// Our first SDP was an offer (actpass); the browser's answer
			// settled the DTLS roles, which later SDP must keep.
			setup = "passive"
			if c.outBrowser != nil && strings.Contains(string(c.outBrowser.InviteResponse.Body()), "a=setup:passive") {
				setup = "active"
			}
		}
	}
	if *ver == 0 {
		*ver = sdpVersion(base)
	}
	*ver++
	if s == sideTrunk && c.active.Load() != nil {
		// Only what the call uses now: the codec may have changed since
		// the first SDP, which for a call to a trunk listed all offered.
		base = setCodecs(base, sipCodecList(c.currentPlan()))
	}
	return rewriteSDP(base, dir, *ver, setup)
}

func sdpVersion(body string) uint64 {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "o=") {
			f := strings.Fields(l)
			if len(f) >= 3 {
				n, _ := strconv.ParseUint(f[2], 10, 64)
				return n
			}
		}
	}
	return 1
}

// rewriteSDP sets the o= version, the audio direction and (if setup is not
// empty) a=setup of an SDP.
func rewriteSDP(body, dir string, version uint64, setup string) string {
	lines := strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n")
	var out []string
	inAudio, placed := false, false
	for _, l := range lines {
		if l == "" {
			continue
		}
		switch {
		case strings.HasPrefix(l, "o="):
			f := strings.Fields(l)
			if len(f) >= 6 {
				f[2] = strconv.FormatUint(version, 10)
				l = strings.Join(f, " ")
			}
		case strings.HasPrefix(l, "m="):
			inAudio = strings.HasPrefix(l, "m=audio")
		case l == "a=sendrecv" || l == "a=sendonly" || l == "a=recvonly" || l == "a=inactive":
			continue
		case setup != "" && strings.HasPrefix(l, "a=setup:"):
			l = "a=setup:" + setup
		}
		if inAudio && !placed && strings.HasPrefix(l, "a=") {
			out = append(out, "a="+dir)
			placed = true
		}
		out = append(out, l)
	}
	if !placed {
		out = append(out, "a="+dir)
	}
	return strings.Join(out, "\r\n") + "\r\n"
}

// offerOut sends the other side a re-INVITE with direction dir (what the
// offering side asked for, so a sendonly hold reaches the far end as
// sendonly) and ACKs its answer.
func (c *Call) offerOut(s side, dir string) {
	c.mid.mu.Lock()
	defer c.mid.mu.Unlock()
	if c.mid.offerDone == nil {
		c.mid.offerDone = sync.NewCond(&c.mid.mu)
	}
	for c.mid.offering[s] { // one offer of ours at a time per dialog
		c.mid.offerDone.Wait()
	}
	select {
	case <-c.ended:
		return
	default:
	}
	body := c.localSDP(s, dir)
	c.r.mu.Lock()
	dialog := c.trunkDialogID // a transfer may replace the trunk dialog meanwhile
	c.r.mu.Unlock()
	// The far end's answer may take a while: the other side's offers must
	// not wait for it (nor get 491).
	c.mid.offering[s] = true
	c.mid.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	res, err := c.inDialog(ctx, s, sip.INVITE, []byte(body), sip.NewHeader("Content-Type", "application/sdp"))
	cancel()
	c.mid.mu.Lock()
	c.mid.offering[s] = false
	c.mid.offerDone.Broadcast()
	if err != nil {
		c.log.Warn("re-INVITE failed", "leg", sideName(s), "err", err)
		return
	}
	if res.StatusCode != 200 {
		c.log.Info("re-INVITE refused", "leg", sideName(s), "code", res.StatusCode)
		return
	}
	c.r.mu.Lock()
	same := c.trunkDialogID == dialog
	c.r.mu.Unlock()
	if s == sideTrunk && len(res.Body()) > 0 && same {
		if _, a, err := sdp.Parse(res.Body()); err == nil {
			c.setRemote(a)
		}
	}
	c.log.Info("re-INVITE", "leg", sideName(s), "direction", dir)
}

func sideName(s side) string {
	if s == sideTrunk {
		return "trunk"
	}
	return "browser"
}

// inDialog sends a request on side s's dialog and waits for its final
// response; for INVITE it also sends the ACK.
func (c *Call) inDialog(ctx context.Context, s side, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	d, err := c.ref(s)
	if err != nil {
		return nil, err
	}
	return d.request(ctx, method, body, hdrs...)
}

// Session timers ----------------------------------------------------------

// sessionExpires reads Session-Expires: "1800;refresher=uac".
func sessionExpires(req interface{ GetHeader(string) sip.Header }) (time.Duration, string, bool) {
	h := req.GetHeader("Session-Expires")
	if h == nil {
		h = req.GetHeader("x")
	}
	if h == nil {
		return 0, "", false
	}
	v, params, _ := strings.Cut(h.Value(), ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, "", false
	}
	refresher := ""
	for _, p := range strings.Split(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "refresher") {
			refresher = strings.ToLower(strings.TrimSpace(val))
		}
	}
	return time.Duration(n) * time.Second, refresher, true
}

// tooBrief answers 422 when a trunk's INVITE asks for a session interval
// below Min-SE (RFC 4028 section 8.1). It reports whether it did.
func tooBrief(req *sip.Request, tx sip.ServerTransaction) bool {
	se, _, ok := sessionExpires(req)
	if !ok || se >= minSE {
		return false
	}
	respond(tx, req, 422, "Session Interval Too Small", sip.NewHeader("Min-SE", strconv.Itoa(int(minSE.Seconds()))))
	return true
}

// addSessionTimer is refreshSessionTimer for the initial INVITE's 200.
func (c *Call) addSessionTimer(req *sip.Request, res *sip.Response) {
	c.refreshSessionTimer(req, res)
}

// refreshSessionTimer applies a trunk request's Session-Expires: the 2xx
// says who refreshes, and the call ends if no refresh comes in time
// (RFC 4028 section 10). When the relay is the refresher it sends the
// refreshes itself.
func (c *Call) refreshSessionTimer(req *sip.Request, res *sip.Response) {
	se, refresher, ok := sessionExpires(req)
	if !ok {
		return
	}
	// Roles are those of this transaction: the trunk sent the request, so
	// it is the UAC; without a choice the refresher is the one asking.
	if refresher != "uas" {
		refresher = "uac"
	}
	res.AppendHeader(sip.NewHeader("Session-Expires", fmt.Sprintf("%d;refresher=%s", int(se.Seconds()), refresher)))
	if sup := req.GetHeader("Supported"); sup != nil && strings.Contains(strings.ToLower(sup.Value()), "timer") {
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
	c.applySessionTimer(se, refresher == "uas")
}

// trunkAnswerSessionTimer applies the Session-Expires of a trunk's 2xx to
// the relay's INVITE (the relay was the UAC).
func (c *Call) trunkAnswerSessionTimer(res *sip.Response) {
	se, refresher, ok := sessionExpires(res)
	if !ok {
		return
	}
	c.applySessionTimer(se, refresher != "uas")
}

// applySessionTimer arms the session timer: the relay refreshes at half
// the interval, or ends the call when the trunk's refresh does not come.
func (c *Call) applySessionTimer(se time.Duration, weRefresh bool) {
	refresher := "uac"
	if !weRefresh {
		refresher = "trunk"
	}
	c.mid.seMu.Lock()
	defer c.mid.seMu.Unlock()
	c.mid.se, c.mid.refresher = se, refresher
	if c.mid.seTimer != nil {
		c.mid.seTimer.Stop()
	}
	if weRefresh {
		c.mid.seTimer = time.AfterFunc(se/2, c.sendRefresh)
		return
	}
	// The refresher is the trunk: without a refresh before the interval
	// minus min(32 s, a third of it), the session is over.
	grace := min(32*time.Second, se/3)
	c.mid.seTimer = time.AfterFunc(se-grace, func() {
		c.log.Info("session timer expired: no refresh from the trunk", "interval", se)
		c.hangup(endSessionTime, 0, "")
	})
}

// sendRefresh refreshes the trunk leg's session with an UPDATE without SDP.
func (c *Call) sendRefresh() {
	select {
	case <-c.ended:
		return
	default:
	}
	c.mid.seMu.Lock()
	se := c.mid.se
	c.mid.seMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.inDialog(ctx, sideTrunk, sip.UPDATE, nil,
		sip.NewHeader("Session-Expires", fmt.Sprintf("%d;refresher=uac", int(se.Seconds()))),
		sip.NewHeader("Supported", "timer"))
	if err != nil || (res.StatusCode != 200 && res.StatusCode != 501 && res.StatusCode != 405) {
		c.log.Info("session refresh failed", "err", err)
		c.hangup(endSessionTime, 0, "")
		return
	}
	c.mid.seMu.Lock()
	defer c.mid.seMu.Unlock()
	c.mid.seTimer = time.AfterFunc(se/2, c.sendRefresh)
}

// stopSessionTimer is called when the call ends.
func (c *Call) stopSessionTimer() {
	c.mid.seMu.Lock()
	defer c.mid.seMu.Unlock()
	if c.mid.seTimer != nil {
		c.mid.seTimer.Stop()
	}
}
