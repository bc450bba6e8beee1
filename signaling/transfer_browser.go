package signaling

import (
	"context"
	"strconv"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/fork"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// transferBrowser performs a blind transfer the browser asked for: its
// peer (the trunk leg) is connected to the registered user target, whose
// browsers ring with an offer in the numbering the forwarding already uses.
func (c *Call) transferBrowser(old sipleg.DialogRef, target string) {
	r := c.r
	old.NotifyRefer(c.log, "100 Trying", false)
	user, ok := r.auth.BrowserUser(target)
	if !ok {
		old.NotifyRefer(c.log, "404 Not Found", true)
		return
	}
	bindings := r.registrar.Lookup(user)
	if len(bindings) == 0 {
		old.NotifyRefer(c.log, "480 Temporarily Unavailable", true)
		return
	}
	cur := c.media.Web()
	var codecs []sdp.Codec
	for _, x := range cur.Audio.Codecs {
		if x.Is(c.media.Plan().BrowserCodec) || x.Is("telephone-event") {
			codecs = append(codecs, x)
		}
	}
	ctx, cancel := untilEnded(c.ended, ringTimeout)
	defer cancel()
	party := fork.Party{From: c.from, To: user}
	if c.direction == "outbound" {
		party.From = c.to // the trunk's party is the one being transferred
	}
	winner, finals, rung := r.ringer.Ring(ctx, c.log, bindings, func() (*media.WebRTCLeg, string, error) { return r.webrtc.OfferCodecs(codecs) },
		party, func() {}, nil)
	if !rung {
		old.NotifyRefer(c.log, "480 Temporarily Unavailable", true)
		return
	}
	if winner == nil {
		code, reason, _ := fork.PickFinal(finals)
		old.NotifyRefer(c.log, fmtStatus(code, reason), true)
		return
	}
	_ = winner.Dialog().Ack(context.Background())
	leg := winner.Leg()
	err := leg.SetAnswer(string(winner.Dialog().InviteResponse.Body()))
	if err == nil && (len(leg.Audio.Codecs) == 0 || !leg.Audio.Codecs[0].Is(c.media.Plan().BrowserCodec)) {
		err = mediaplan.ErrNoCommonCodec
	}
	if err != nil {
		c.log.Info("transfer target's answer unusable", "err", err)
		r.ringer.HangUp(winner)
		old.NotifyRefer(c.log, "488 Not Acceptable Here", true)
		return
	}
	// Swap the browser leg.
	c.mid.mu.Lock()
	browser := sipleg.New(nil)
	browser.SetClient(winner.Dialog())
	prev, ok := c.replaceLeg(sideBrowser, browser)
	if !ok {
		c.mid.mu.Unlock()
		r.ringer.HangUp(winner)
		return
	}
	c.media.SetWeb(leg)
	c.setDir(sideBrowser, "sendrecv")
	c.mid.mu.Unlock()
	_ = cur.Close()
	c.log.Info("transferred by the browser", "target", user)

	old.NotifyRefer(c.log, "200 OK", true)
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	_ = prev.Bye(bctx)
}

func fmtStatus(code int, reason string) string {
	return strconv.Itoa(code) + " " + reason
}
