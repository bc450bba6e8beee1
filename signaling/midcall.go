package signaling

import (
	"errors"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// Mid-call offers on a browser↔trunk call: hold, resume, a moved address,
// a session refresh, or (from the trunk) a codec change. The offering side
// gets its answer at once; the other side gets an offer of the new
// direction afterwards, so a sendonly hold reaches the far end as sendonly.

// midCallState is what changes during a call: hold and offers.
type midCallState struct {
	mu   sync.Mutex  // serialises offers and answers on the call
	hold sipleg.Hold // either side has put the call on hold
}

// setDir records the direction side s asked for and reports whether it
// changed; c.mid.mu is held.
func (c *Call) setDir(s side, dir string) bool {
	changed := c.Leg(s).SetDir(dir)
	c.mid.hold.Update(c.browser, c.trunk)
	return changed
}

// onOffer answers an in-dialog INVITE or UPDATE from side s of the call;
// an UPDATE without a body is a session refresh.
func (c *Call) onOffer(s side, req *sip.Request, tx sip.ServerTransaction) {
	if req.Method == sip.INVITE && c.answerTime().IsZero() {
		sipleg.Respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	body, fwd := "", ""
	if len(req.Body()) > 0 || req.Method == sip.INVITE {
		var code int
		body, code, fwd = c.offerIn(s, req)
		if code != 200 {
			sipleg.Respond(tx, req, code, statusText(code))
			return
		}
	}
	var err error
	if s == sideTrunk {
		err = c.legNow(s).AnswerOffer(req, tx, body, c.contact(s))
	} else {
		// The browser's dialog has no session timer: answer plainly.
		res := sipleg.OKWithSDP(req, body)
		res.AppendHeader(c.contact(s))
		err = tx.Respond(res)
	}
	if err != nil {
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

// contact is the relay's Contact towards side s, for a response. The
// trunk's dialog runs over TLS when its trunk does: the Contact must say
// so, or in-dialog requests would fall back to plain UDP.
func (c *Call) contact(s side) sip.Header {
	switch {
	case s == sideTrunk && c.route != nil:
		return sip.HeaderClone(&c.r.trunkUA.forTrunk(c.route).ContactHDR)
	case s == sideTrunk:
		return sip.HeaderClone(&c.r.trunkUA.plain.ContactHDR)
	}
	return sip.HeaderClone(&c.r.browserUA.ContactHDR)
}

// offerIn takes an offer from side s. It returns the answer body, a
// status code, and the direction to offer the other side ("" when the
// direction did not change).
func (c *Call) offerIn(s side, req *sip.Request) (string, int, string) {
	c.mid.mu.Lock()
	defer c.mid.mu.Unlock()
	if c.Leg(s).Offering() {
		return "", 491, "" // an offer of ours to s is outstanding: glare
	}
	if len(req.Body()) == 0 {
		// Late offer in a re-INVITE: we offer what we have; the ACK answers.
		return c.localSDP(s, c.Leg(otherSide(s)).AskedDir()), 200, ""
	}
	_, a, err := sdp.Parse(req.Body())
	if err != nil {
		return "", 400, ""
	}
	dir := a.EffectiveDirection()
	if s == sideBrowser {
		// WebRTC SDP always says c=0.0.0.0 (ICE decides); only the
		// attribute counts.
		dir = firstNonEmpty(a.Direction, "sendrecv")
	}
	if s == sideTrunk {
		// A new codec or new payload types: the relay re-plumbs the media
		// and the browser keeps its codec (callmedia.Media.Follow). What it
		// cannot join to the browser's codec gets 488, and the call goes
		// on as it was.
		if err := c.media.Follow(a); err != nil {
			c.log.Info("trunk's mid-call offer refused", "err", err)
			return "", 488, ""
		}
		c.trunk.SetRemote(a) // a moved address (or port) takes effect now
	}
	changed := c.setDir(s, dir)
	ans := c.localSDP(s, sdp.AnswerDirection(dir))
	if changed {
		return ans, 200, dir
	}
	return ans, 200, ""
}

// localSDP is the relay's SDP towards side s with direction dir and a new
// version: the session it established, rewritten; towards the trunk, with
// the codecs of the current plan. c.mid.mu is held.
func (c *Call) localSDP(s side, dir string) string {
	l := c.Leg(s)
	setup := ""
	if s == sideTrunk {
		if ans := l.PeerAnswer(); c.media.Plan().Mode == mediaplan.ModeE2E && ans != nil {
			// Our offer said actpass for the browser; the trunk's answer
			// settled the roles, which later SDP must keep.
			setup = mediaplan.E2ESettledSetup(string(ans))
		}
		var codecs []sdp.Codec
		if c.media.Settled() {
			// Only what the call uses now: the codec may have changed since
			// the first SDP, which for a call to a trunk listed all offered.
			codecs = c.media.Plan().TrunkCodecs()
		}
		return l.NextSDP(dir, setup, codecs)
	}
	switch {
	case l.PlacedByPeer():
		l.SetSDP(c.answerSDP)
	case c.media.Web() != nil:
		l.SetSDP(c.media.Web().LocalSDP())
		// Our first SDP was an offer (actpass); the browser's answer
		// settled the DTLS roles, which later SDP must keep.
		setup = "passive"
		if strings.Contains(string(l.PeerAnswer()), "a=setup:passive") {
			setup = "active"
		}
	}
	return l.NextSDP(dir, setup, nil)
}

// offerOut sends side s a re-INVITE with direction dir (what the other
// side asked for) and ACKs its answer.
func (c *Call) offerOut(s side, dir string) {
	l := c.legNow(s)
	res, err := l.SendOffer(c.ended, func() string {
		c.mid.mu.Lock()
		defer c.mid.mu.Unlock()
		return c.localSDP(s, dir)
	})
	switch {
	case errors.Is(err, sipleg.ErrEnded):
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
