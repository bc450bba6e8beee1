package join

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// In-dialog requests on a join's legs: hang-up, offers (hold, a moved
// address, a session refresh, a codec change the other leg can follow),
// INFO passed across, and REFER, which swaps in a transfer target.

// Serve takes an in-dialog request from leg i of the join (as Find
// gave it).
func (j *Join) Serve(i int, req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.BYE:
		j.onBye(i, req, tx)
	case sip.INVITE, sip.UPDATE:
		j.onOffer(i, req, tx)
	case sip.ACK:
		// Acknowledges a 2xx of ours; a join takes no answers in ACKs.
	case sip.INFO:
		j.onInfo(i, req, tx)
	case sip.NOTIFY:
		sipleg.Respond(tx, req, 200, "OK")
	case sip.REFER:
		j.onRefer(i, req, tx)
	default:
		sipleg.Respond(tx, req, 405, "Method Not Allowed", sip.NewHeader("Allow", "INVITE, ACK, BYE, UPDATE, INFO, REFER, NOTIFY, OPTIONS"))
	}
}

// onBye ends the join when leg i hangs up; the other leg gets BYE.
func (j *Join) onBye(i int, req *sip.Request, tx sip.ServerTransaction) {
	j.mu.Lock()
	l := j.legs[i]
	j.mu.Unlock()
	l.ReadBye(req, tx)
	j.hangup(cdr.CauseNormalTrunk, i)
}

// onOffer handles a re-INVITE or UPDATE from leg i: hold, resume, a moved
// address, a session refresh, or a move to a codec the other leg's can be
// joined to (mediaplan.Joinable); any other codec change gets 488:
// the other leg carries the same one and there is no transcoder between.
func (j *Join) onOffer(i int, req *sip.Request, tx sip.ServerTransaction) {
	j.mu.Lock()
	l := j.legs[i]
	if l.Offering() {
		j.mu.Unlock()
		sipleg.Respond(tx, req, 491, "Request Pending") // glare with our own offer on this dialog
		return
	}
	var body string
	fwd := ""
	switch {
	case len(req.Body()) == 0 && req.Method == sip.UPDATE:
		// A session refresh: nothing changes.
	case len(req.Body()) == 0:
		body = l.NextSDP(j.legs[1-i].AskedDir(), "", nil)
	default:
		_, a, err := sdp.Parse(req.Body())
		if err != nil {
			j.mu.Unlock()
			sipleg.Respond(tx, req, 400, "Bad Request")
			return
		}
		codec, ok := j.followCodec(l, j.legs[1-i], a)
		if !ok {
			j.mu.Unlock()
			sipleg.Respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 mediarelay "no codec the other leg can be joined to"`))
			return
		}
		l.SetRemote(a)
		cur, curDTMF := l.Codecs()
		dtmf := curDTMF
		if ev, ok := a.DTMF(8000); ok && dtmf.PT != 0 {
			dtmf.PT = ev.PT
		} else if !ok {
			dtmf = sdp.Codec{} // the offer dropped telephone-event
		}
		if !codec.Is(cur.Name) || codec.PT != cur.PT || dtmf.PT != curDTMF.PT {
			// The leg moves to another codec, or renumbers: answer with
			// its numbering and re-plumb both directions.
			l.MoveCodec(sdp.Codec{Name: codec.Name, PT: codec.PT, Clock: codec.Clock, Channels: max(codec.Channels, 1)}, dtmf)
			j.restartMedia()
			j.log.Info("trunk leg changed codec", "leg", l.CallID(), "codec", codec.Name)
		}
		dir := a.EffectiveDirection()
		if l.SetDir(dir) {
			fwd = dir
		}
		j.hold.Update(j.legs[:]...)
		body = l.NextSDP(sdp.AnswerDirection(dir), "", nil)
	}
	route := l.Route()
	j.mu.Unlock()
	if err := l.AnswerOffer(req, tx, body, j.g.host.Contact(route)); err != nil {
		return
	}
	if fwd != "" {
		go j.offerOut(1-i, fwd)
	}
}

// followCodec picks the codec leg l goes on with after its offer a: the
// one it has if still offered, else the first offered one that the other
// leg's codec can be joined to.
func (j *Join) followCodec(l, other *sipleg.Leg, a sdp.Audio) (sdp.Codec, bool) {
	mine, _ := l.Codecs()
	if c, ok := a.Find(mine.Name); ok && c.Clock == mine.Clock {
		return c, true
	}
	theirs, _ := other.Codecs()
	for _, c := range a.Codecs {
		if !c.Is("telephone-event") && mediaplan.Joinable(c, theirs) {
			return c, true
		}
	}
	return sdp.Codec{}, false
}

// offerOut tells leg k the direction the other leg asked for.
func (j *Join) offerOut(k int, dir string) {
	j.mu.Lock()
	l := j.legs[k]
	j.mu.Unlock()
	res, err := l.SendOffer(j.ended, func() string {
		j.mu.Lock()
		defer j.mu.Unlock()
		return l.NextSDP(dir, "", nil)
	})
	if errors.Is(err, sipleg.ErrEnded) {
		return
	}
	if err != nil || !res.IsSuccess() {
		j.log.Info("re-INVITE to the other trunk leg failed", "err", err, "res", res)
	}
}

// onInfo passes INFO (DTMF, mostly) to the other leg and returns its answer.
func (j *Join) onInfo(i int, req *sip.Request, tx sip.ServerTransaction) {
	j.mu.Lock()
	other := j.legs[1-i]
	j.mu.Unlock()
	var hdrs []sip.Header
	if ct := req.ContentType(); ct != nil {
		hdrs = append(hdrs, sip.NewHeader("Content-Type", ct.Value()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := other.Request(ctx, sip.INFO, req.Body(), hdrs...)
	if err != nil {
		sipleg.Respond(tx, req, 408, "Request Timeout")
		return
	}
	sipleg.Respond(tx, req, int(res.StatusCode), res.Reason)
}

// onRefer: a trunk in a join transfers its peer (the other trunk leg) to
// a new target. The relay calls the target and swaps it in for the
// referring leg.
func (j *Join) onRefer(i int, req *sip.Request, tx sip.ServerTransaction) {
	target, ok := sipleg.ReferTarget(req, tx)
	if !ok {
		return
	}
	route := j.g.host.Route(target.User)
	if route == nil {
		sipleg.Respond(tx, req, 603, "Decline", sip.NewHeader("Warning", `399 mediarelay "no route to the transfer target"`))
		return
	}
	var extra []sip.Header
	if rep, present, ok := sipleg.ReferReplaces(target); present {
		if !ok {
			sipleg.Respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 mediarelay "malformed Replaces"`))
			return
		}
		extra = append(extra, sip.NewHeader("Replaces", rep.String()))
	}
	j.mu.Lock()
	old := j.legs[i]
	other := j.legs[1-i]
	// A copy of what the target is offered: the codec may change while it rings.
	codec, dtmf := other.Codecs()
	peer := staying{party: other.Party(), codec: codec, dtmf: dtmf}
	j.mu.Unlock()
	res := sip.NewResponseFromRequest(req, 202, "Accepted", nil)
	res.AppendHeader(j.g.host.Contact(old.Route()))
	if err := tx.Respond(res); err != nil {
		return
	}
	go j.transfer(i, old, peer, route, target.User, extra)
}

// staying is the party that stays in the join when the other is
// transferred, as the transfer target is offered it: its codec as it was
// when the REFER came (it may change while the target rings).
type staying struct {
	party       string
	codec, dtmf sdp.Codec
}

// transfer calls the target of leg i's REFER and, once it answers, swaps
// it in for leg i (old), reporting progress to old in NOTIFYs.
func (j *Join) transfer(i int, old *sipleg.Leg, peer staying, route *config.Trunk, user string, extra []sip.Header) {
	ref, _ := old.Ref()
	notify := func(status string, final bool) { ref.NotifyRefer(j.log, status, final) }
	notify("100 Trying", false)
	leg, status := j.g.host.Dial(j.ended, route, user, peer.party, peer.codec, peer.dtmf, extra)
	if leg == nil {
		notify(status, true)
		return
	}
	// Swap the leg: stop both forwarders, then start them on the new pair.
	j.mu.Lock()
	select {
	case <-j.ended:
		j.mu.Unlock()
		leg.Drop()
		return
	default:
	}
	for _, l := range j.legs {
		_ = l.RTP().PauseReads()
	}
	j.mediaWG.Wait()
	old.StopSessionTimer()
	g := j.g
	g.mu.Lock() // the router reads the legs under it
	j.legs[i] = leg
	delete(g.byDialog, old.ID())
	g.byDialog[leg.ID()] = j
	g.mu.Unlock()
	j.adopt(leg)
	j.hold.Update(j.legs[:]...)
	j.startMedia()
	j.mu.Unlock()
	j.log.Info("transferred", "target", user, "trunk", route.Name)
	notify("200 OK", true)
	old.Drop()
}
