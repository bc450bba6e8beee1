package signaling

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
	"github.com/mediarelay/mediarelay/transcode"
)

// A join connects two trunk legs with the relay in the media path. It is
// what is left of a browser's call when the browser hands its trunk peer
// on to a number that routes to a trunk (blind REFER), or connects the
// trunk peers of two of its calls (attended transfer, REFER with
// Replaces). Each trunk leg keeps its dialog, media port, codec and keys;
// the browser legs are gone. Media passes through unchanged but for the
// RTP header, so both legs carry the same codec, or G.711's two laws,
// converted byte by byte; nothing is decoded.

// directionTransfer is the CDR direction of a join.
const directionTransfer = "transfer"

// join is two trunk legs relayed to each other.
type join struct {
	r        *Relay
	id       string
	log      *slog.Logger
	from, to string
	start    time.Time

	mu      sync.Mutex // guards legs and their SDP state
	legs    [2]*sipleg.Leg
	hold    sipleg.Hold
	mediaWG sync.WaitGroup

	once  sync.Once
	ended chan struct{}
	cause string

	counted legCounts // what the metrics have of its legs' packets
}

// startJoin relays a and b to each other until either hangs up.
func (r *Relay) startJoin(a, b *sipleg.Leg) *join {
	j := &join{r: r, id: newCallID(), legs: [2]*sipleg.Leg{a, b}, from: a.Party(), to: b.Party(),
		start: time.Now(), ended: make(chan struct{})}
	j.log = r.log.With("call", j.id, "trunk", a.Route().Name, "trunk2", b.Route().Name)
	r.mu.Lock()
	r.joins[a.ID()] = j
	r.joins[b.ID()] = j
	r.mu.Unlock()
	j.mu.Lock()
	ac, _ := a.Codecs()
	bc, _ := b.Codecs()
	j.log.Info("trunk legs joined", "codec", ac.Name, "codec2", bc.Name, "leg1", a.CallID(), "leg2", b.CallID())
	j.startMedia()
	for _, l := range j.legs {
		j.adopt(l)
	}
	j.mu.Unlock()
	go j.watch()
	return j
}

// startMedia runs one forwarder per direction; j.mu is held.
func (j *join) startMedia() {
	for i := range j.legs {
		src, dst := j.legs[i], j.legs[1-i]
		_ = src.RTP().ResumeReads()
		sc, sd := src.Codecs()
		dc, dd := dst.Codecs()
		pts := map[uint8]uint8{sc.PT: dc.PT}
		if sd.PT != 0 && dd.PT != 0 && sd.Clock == dd.Clock {
			pts[sd.PT] = dd.PT
		}
		o := media.ForwarderOptions{PTMap: pts, ClockRate: dc.Clock, OnDrop: j.r.countDrop}
		if !sc.Is(dc.Name) {
			// μ-law on one leg, A-law on the other (mediaplan.Joinable checked it).
			o.Recode, _ = transcode.G711Recode(sc.Name, dc.Name)
			o.RecodePT = sc.PT
		}
		f := media.NewForwarder(o)
		j.mediaWG.Add(1)
		go func() {
			defer j.mediaWG.Done()
			_ = f.Run(src.RTP(), dst.RTP()) // returns when a leg closes or pauses
		}()
	}
}

// adopt makes the join the one leg l's session timer ends, and restarts
// its clock.
func (j *join) adopt(l *sipleg.Leg) {
	l.AdoptSessionTimer(j.log, func() { j.hangup(cdr.CauseSessionExpired, -1) })
	l.ArmSessionTimer()
}

// restartMedia stops both forwarders and starts them again on the current
// legs and codecs; j.mu is held.
func (j *join) restartMedia() {
	for _, l := range j.legs {
		_ = l.RTP().PauseReads()
	}
	j.mediaWG.Wait()
	j.startMedia()
}

// watch ends the join when media stops on either leg (unless held).
func (j *join) watch() {
	timeout := j.r.cfg.Media.Timeout
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-j.ended:
			return
		case now := <-t.C:
			j.mu.Lock()
			a, b := j.legs[0].RTP(), j.legs[1].RTP()
			j.mu.Unlock()
			if j.hold.Silent(now, j.start, timeout, a, b) {
				j.hangup(cdr.CauseMediaTimeout, -1)
				return
			}
		}
	}
}

// hangup ends the join once: BYE to every leg but the one that sent BYE
// (from; -1 for none), media closed, the CDR written.
func (j *join) hangup(cause string, from int) {
	j.once.Do(func() {
		j.mu.Lock()
		j.cause = cause
		close(j.ended)
		legs := j.legs
		var codecs [2]string
		for i, l := range legs {
			c, _ := l.Codecs()
			codecs[i] = c.Name
		}
		for _, l := range legs {
			l.StopSessionTimer()
		}
		j.mu.Unlock()
		var wg sync.WaitGroup
		for i, l := range legs {
			if i == from {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := l.Bye(ctx); err != nil {
					j.log.Debug("bye failed", "leg", i, "err", err)
				}
			}()
		}
		wg.Wait()
		for _, l := range legs {
			_ = l.RTP().Close()
		}
		j.mediaWG.Wait()
		j.finish(legs, codecs)
	})
}

func (j *join) finish(legs [2]*sipleg.Leg, codecs [2]string) {
	r := j.r
	end := time.Now()
	r.mu.Lock()
	for _, l := range legs {
		if r.joins[l.ID()] == j {
			delete(r.joins, l.ID())
		}
	}
	r.mu.Unlock()
	a, b := legs[0], legs[1]
	as, bs := a.RTP().Stats(), b.RTP().Stats()
	trunk := a.Route().Name
	if b.Route().Name != trunk {
		trunk += "," + b.Route().Name
	}
	r.countEnd(j.cause, trunk)
	// A join has no browser leg: the Browser* and WebRTC* fields describe
	// the second trunk leg (see cdr.Record).
	rec := cdr.Record{
		CallID: j.id, TrunkCallID: a.CallID(), BrowserCallID: b.CallID(),
		From: j.from, To: j.to, Trunk: trunk, Direction: directionTransfer,
		Start: j.start, Answer: j.start, End: end, EndCause: j.cause, SIPCode: 200,
		Mode: mediaplan.ModePassthrough, SIPCodec: codecs[0], WebRTCCodec: codecs[1],
	}
	recordLegs(&rec, as, bs, a.RTP().Transport(), b.RTP().Transport())
	r.countTransports("", rec.SIPTransport)
	r.countTransports("", rec.WebRTCTransport)
	if !strings.EqualFold(codecs[0], codecs[1]) {
		rec.Mode = mediaplan.ModeTranscode // G.711 law conversion, as calls record it
	}
	j.countMedia(legs)
	if r.cdr != nil {
		if err := r.cdr.Write(rec); err != nil {
			j.log.Error("cdr not written", "err", err)
		}
	}
	j.log.Info("call ended", "cause", j.cause, "duration", end.Sub(j.start).Round(time.Millisecond).String())
}

// In-dialog requests ----------------------------------------------------

func (j *join) onBye(i int, req *sip.Request, tx sip.ServerTransaction) {
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
func (j *join) onOffer(i int, req *sip.Request, tx sip.ServerTransaction) {
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
	if err := l.AnswerOffer(req, tx, body, sip.HeaderClone(&j.r.dialogUAFor(route).ContactHDR)); err != nil {
		return
	}
	if fwd != "" {
		go j.offerOut(1-i, fwd)
	}
}

// followCodec picks the codec leg l goes on with after its offer a: the
// one it has if still offered, else the first offered one that the other
// leg's codec can be joined to.
func (j *join) followCodec(l, other *sipleg.Leg, a sdp.Audio) (sdp.Codec, bool) {
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
func (j *join) offerOut(k int, dir string) {
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
func (j *join) onInfo(i int, req *sip.Request, tx sip.ServerTransaction) {
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
func (j *join) onRefer(i int, req *sip.Request, tx sip.ServerTransaction) {
	target, ok := sipleg.ReferTarget(req, tx)
	if !ok {
		return
	}
	route := j.r.route(target.User)
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
	peer := joinPeer{party: other.Party(), codec: codec, dtmf: dtmf}
	j.mu.Unlock()
	res := sip.NewResponseFromRequest(req, 202, "Accepted", nil)
	res.AppendHeader(sip.HeaderClone(&j.r.dialogUAFor(old.Route()).ContactHDR))
	if err := tx.Respond(res); err != nil {
		return
	}
	go j.transfer(i, old, peer, route, target.User, extra)
}

// joinPeer is what a transfer target is offered: the party staying in
// the join, and its codec as it was when the REFER came (it may change
// while the target rings).
type joinPeer struct {
	party       string
	codec, dtmf sdp.Codec
}

func (j *join) transfer(i int, old *sipleg.Leg, peer joinPeer, route *config.Trunk, user string, extra []sip.Header) {
	ref, _ := old.Ref()
	notify := func(status string, final bool) { ref.NotifyRefer(j.log, status, final) }
	notify("100 Trying", false)
	ctx, cancel := untilEnded(j.ended, ringTimeout)
	defer cancel()
	leg, status := j.r.dialTrunk(ctx, route, user, peer.party, peer.codec, peer.dtmf, dialOptions{otherLaw: true, extra: extra})
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
	j.legs[i] = leg
	j.adopt(leg)
	j.r.mu.Lock()
	delete(j.r.joins, old.ID())
	j.r.joins[leg.ID()] = j
	j.r.mu.Unlock()
	j.hold.Update(j.legs[:]...)
	j.startMedia()
	j.mu.Unlock()
	j.log.Info("transferred", "target", user, "trunk", route.Name)
	notify("200 OK", true)
	old.Drop()
}
