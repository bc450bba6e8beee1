package signaling

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Mid-call offers on a browser↔trunk call: hold, resume, a moved address,
// a session refresh, or (from the trunk) a codec change. The offering side
// gets its answer at once; the other side gets an offer of the new
// direction afterwards, so a sendonly hold reaches the far end as sendonly.

// midCallState is what changes during a call: hold and offers.
type midCallState struct {
	mu   sync.Mutex // serialises offers and answers on the call
	hold holdState  // either side has put the call on hold
}

func (c *Call) onHold() bool { return c.mid.hold.held.Load() }

// mediaSince is when the media timeout starts counting: the answer, or the
// last resume from hold.
func (c *Call) mediaSince() time.Time { return c.mid.hold.since(c.answered) }

// leg is the call's dialog on side s.
func (c *Call) leg(s side) *SIPLeg {
	if s == sideTrunk {
		return c.trunk
	}
	return c.browser
}

// setDir records the direction side s asked for and reports whether it
// changed; c.mid.mu is held.
func (c *Call) setDir(s side, dir string) bool {
	changed := c.leg(s).setDir(dir)
	c.mid.hold.update(c.browser, c.trunk)
	return changed
}

// onOffer answers an in-dialog INVITE or UPDATE from side s of the call;
// an UPDATE without a body is a session refresh.
func (c *Call) onOffer(s side, req *sip.Request, tx sip.ServerTransaction) {
	if req.Method == sip.INVITE && c.answered.IsZero() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	body, fwd := "", ""
	if len(req.Body()) > 0 || req.Method == sip.INVITE {
		var code int
		body, code, fwd = c.offerIn(s, req)
		if code != 200 {
			respond(tx, req, code, statusText(code))
			return
		}
	}
	l := c.leg(s)
	if s != sideTrunk {
		// The browser's dialog has no session timer: answer plainly.
		if err := answerPlain(req, tx, body, c.contact(s)); err != nil {
			return
		}
	} else if err := l.answerOffer(req, tx, body, c.contact(s)); err != nil {
		return
	}
	if fwd != "" {
		go c.offerOut(otherSide(s), fwd)
	}
}

// answerPlain answers an offer or refresh with 200 and body, if any.
func answerPlain(req *sip.Request, tx sip.ServerTransaction, body string, contact sip.ContactHeader) error {
	var res *sip.Response
	if body == "" {
		res = sip.NewResponseFromRequest(req, 200, "OK", nil)
	} else {
		res = sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	res.AppendHeader(sip.HeaderClone(&contact))
	return tx.Respond(res)
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

// contact is the relay's Contact towards side s. The trunk's dialog runs
// over TLS when its trunk does: the Contact must say so, or in-dialog
// requests would fall back to plain UDP.
func (c *Call) contact(s side) sip.ContactHeader {
	switch {
	case s == sideTrunk && c.route != nil:
		return c.r.dialogUAFor(c.route).ContactHDR
	case s == sideTrunk:
		return c.r.trunkUA.ContactHDR
	}
	return c.r.browserUA.ContactHDR
}

// addContact puts the relay's Contact for side s on a 2xx.
func (c *Call) addContact(s side, res *sip.Response) {
	if res.Contact() != nil {
		return
	}
	ct := c.contact(s)
	res.AppendHeader(sip.HeaderClone(&ct))
}

// offerIn takes an offer from side s. It returns the answer body, a
// status code, and the direction to offer the other side ("" when the
// direction did not change).
func (c *Call) offerIn(s side, req *sip.Request) (string, int, string) {
	c.mid.mu.Lock()
	defer c.mid.mu.Unlock()
	if c.leg(s).offering.Load() {
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
		// and the browser keeps its codec (followTrunkOffer). What it
		// cannot join to the browser's codec gets 488, and the call goes
		// on as it was.
		if err := c.followTrunkOffer(a); err != nil {
			c.log.Info("trunk's mid-call offer refused", "err", err)
			return "", 488, ""
		}
		c.trunk.setRemote(a) // a moved address (or port) takes effect now
	}
	changed := c.setDir(s, dir)
	ans := c.localSDP(s, sdp.AnswerDirection(dir))
	if changed {
		return ans, 200, dir
	}
	return ans, 200, ""
}

// currentDir is the direction the relay last used towards s: what the
// other side asked for.
func (c *Call) currentDir(s side) string {
	return firstNonEmpty(c.leg(otherSide(s)).dir, "sendrecv")
}

// localSDP is the relay's SDP towards side s with direction dir and a new
// version: the session it established, rewritten; towards the trunk, with
// the codecs of the current plan. c.mid.mu is held.
func (c *Call) localSDP(s side, dir string) string {
	l := c.leg(s)
	setup := ""
	if s == sideTrunk {
		if c.active.Load() != nil {
			// Only what the call uses now: the codec may have changed since
			// the first SDP, which for a call to a trunk listed all offered.
			if l.ver == 0 {
				l.ver = sdpVersion(l.sdp)
			}
			l.ver++
			return rewriteSDP(setCodecs(l.sdp, sipCodecList(c.currentPlan())), dir, l.ver, "")
		}
		return l.nextSDP(dir, "")
	}
	switch {
	case l.dss != nil:
		l.sdp = c.answerSDP
	case c.web != nil:
		l.sdp = c.web.LocalSDP()
		// Our first SDP was an offer (actpass); the browser's answer
		// settled the DTLS roles, which later SDP must keep.
		setup = "passive"
		if l.dcs != nil && strings.Contains(string(l.dcs.InviteResponse.Body()), "a=setup:passive") {
			setup = "active"
		}
	}
	return l.nextSDP(dir, setup)
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

// offerOut sends side s a re-INVITE with direction dir (what the other
// side asked for) and ACKs its answer.
func (c *Call) offerOut(s side, dir string) {
	l := c.leg(s)
	res, err := l.sendOffer(c.ended, func() string {
		c.mid.mu.Lock()
		defer c.mid.mu.Unlock()
		return c.localSDP(s, dir)
	})
	switch {
	case errors.Is(err, errEnded):
	case err != nil:
		c.log.Warn("re-INVITE failed", "leg", sideName(s), "err", err)
	case res.StatusCode != 200:
		c.log.Info("re-INVITE refused", "leg", sideName(s), "code", res.StatusCode)
	default:
		c.log.Info("re-INVITE", "leg", sideName(s), "direction", dir)
	}
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
	c.r.mu.Lock() // a transfer may replace the leg
	l := c.leg(s)
	c.r.mu.Unlock()
	d, err := l.ref()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sideName(s), err)
	}
	return d.request(ctx, method, body, hdrs...)
}
