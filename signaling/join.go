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

// endTransferred ends a browser's call whose trunk leg went on in a join.
const endTransferred = "transferred"

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
	legs    [2]*SIPLeg
	hold    holdState
	mediaWG sync.WaitGroup

	once  sync.Once
	ended chan struct{}
	cause string

	counted legCounts // what the metrics have of its legs' packets
}

// startJoin relays a and b to each other until either hangs up.
func (r *Relay) startJoin(a, b *SIPLeg) *join {
	j := &join{r: r, id: newCallID(), legs: [2]*SIPLeg{a, b}, from: a.party, to: b.party,
		start: time.Now(), ended: make(chan struct{})}
	j.log = r.log.With("call", j.id, "trunk", a.route.Name, "trunk2", b.route.Name)
	r.mu.Lock()
	r.joins[a.id] = j
	r.joins[b.id] = j
	r.mu.Unlock()
	j.mu.Lock()
	j.log.Info("trunk legs joined", "codec", a.codec.Name, "codec2", b.codec.Name, "leg1", a.callID, "leg2", b.callID)
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
		_ = src.rtp.ResumeReads()
		pts := map[uint8]uint8{src.codec.PT: dst.codec.PT}
		if src.dtmf.PT != 0 && dst.dtmf.PT != 0 && src.dtmf.Clock == dst.dtmf.Clock {
			pts[src.dtmf.PT] = dst.dtmf.PT
		}
		o := media.ForwarderOptions{PTMap: pts, ClockRate: dst.codec.Clock, OnDrop: j.r.countDrop}
		if !src.codec.Is(dst.codec.Name) {
			// μ-law on one leg, A-law on the other (mediaplan.Joinable checked it).
			o.Recode, _ = transcode.G711Recode(src.codec.Name, dst.codec.Name)
			o.RecodePT = src.codec.PT
		}
		f := media.NewForwarder(o)
		j.mediaWG.Add(1)
		go func() {
			defer j.mediaWG.Done()
			_ = f.Run(src.rtp, dst.rtp) // returns when a leg closes or pauses
		}()
	}
}

// adopt makes the join the one leg l's session timer ends, and restarts
// its clock.
func (j *join) adopt(l *SIPLeg) {
	l.adoptSessionTimer(j.log, func() { j.hangup(endSessionTime, -1) })
	l.armSessionTimer()
}

// restartMedia stops both forwarders and starts them again on the current
// legs and codecs; j.mu is held.
func (j *join) restartMedia() {
	for _, l := range j.legs {
		_ = l.rtp.PauseReads()
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
			a, b := j.legs[0].rtp, j.legs[1].rtp
			j.mu.Unlock()
			if j.hold.silent(now, j.start, timeout, a, b) {
				j.hangup(endMediaTimeout, -1)
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
		codecs := [2]string{legs[0].codec.Name, legs[1].codec.Name}
		for _, l := range legs {
			l.stopSessionTimer()
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
				if err := l.bye(ctx); err != nil {
					j.log.Debug("bye failed", "leg", i, "err", err)
				}
			}()
		}
		wg.Wait()
		for _, l := range legs {
			_ = l.rtp.Close()
		}
		j.mediaWG.Wait()
		j.finish(legs, codecs)
	})
}

func (j *join) finish(legs [2]*SIPLeg, codecs [2]string) {
	r := j.r
	end := time.Now()
	r.mu.Lock()
	for _, l := range legs {
		if r.joins[l.id] == j {
			delete(r.joins, l.id)
		}
	}
	r.mu.Unlock()
	a, b := legs[0], legs[1]
	as, bs := a.rtp.Stats(), b.rtp.Stats()
	trunk := a.route.Name
	if b.route.Name != trunk {
		trunk += "," + b.route.Name
	}
	r.countEnd(j.cause, trunk)
	// A join has no browser leg: the Browser* and WebRTC* fields describe
	// the second trunk leg (see cdr.Record).
	rec := cdr.Record{
		CallID: j.id, TrunkCallID: a.callID, BrowserCallID: b.callID,
		From: j.from, To: j.to, Trunk: trunk, Direction: directionTransfer,
		Start: j.start, Answer: j.start, End: end, EndCause: j.cause, SIPCode: 200,
		Mode: mediaplan.ModePassthrough, SIPCodec: codecs[0], WebRTCCodec: codecs[1],
	}
	recordLegs(&rec, as, bs, a.rtp.Transport(), b.rtp.Transport())
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
	l.readBye(req, tx)
	j.hangup(endNormalTrunk, i)
}

// onOffer handles a re-INVITE or UPDATE from leg i: hold, resume, a moved
// address, a session refresh, or a move to a codec the other leg's can be
// joined to (mediaplan.Joinable); any other codec change gets 488:
// the other leg carries the same one and there is no transcoder between.
func (j *join) onOffer(i int, req *sip.Request, tx sip.ServerTransaction) {
	j.mu.Lock()
	l := j.legs[i]
	if l.offering.Load() {
		j.mu.Unlock()
		respond(tx, req, 491, "Request Pending") // glare with our own offer on this dialog
		return
	}
	var body string
	fwd := ""
	switch {
	case len(req.Body()) == 0 && req.Method == sip.UPDATE:
		// A session refresh: nothing changes.
	case len(req.Body()) == 0:
		body = l.nextSDP(j.legs[1-i].askedDir(), "", nil)
	default:
		_, a, err := sdp.Parse(req.Body())
		if err != nil {
			j.mu.Unlock()
			respond(tx, req, 400, "Bad Request")
			return
		}
		codec, ok := j.followCodec(l, j.legs[1-i], a)
		if !ok {
			j.mu.Unlock()
			respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 mediarelay "no codec the other leg can be joined to"`))
			return
		}
		l.setRemote(a)
		dtmf := l.dtmf
		if ev, ok := a.DTMF(8000); ok && dtmf.PT != 0 {
			dtmf.PT = ev.PT
		} else if !ok {
			dtmf = sdp.Codec{} // the offer dropped telephone-event
		}
		if !codec.Is(l.codec.Name) || codec.PT != l.codec.PT || dtmf.PT != l.dtmf.PT {
			// The leg moves to another codec, or renumbers: answer with
			// its numbering and re-plumb both directions.
			l.codec = sdp.Codec{Name: codec.Name, PT: codec.PT, Clock: codec.Clock, Channels: max(codec.Channels, 1)}
			l.dtmf = dtmf
			codecs := []sdp.Codec{l.codec}
			if l.dtmf.PT != 0 {
				codecs = append(codecs, l.dtmf)
			}
			l.sdp = sdp.SetCodecs(l.sdp, codecs)
			j.restartMedia()
			j.log.Info("trunk leg changed codec", "leg", l.callID, "codec", codec.Name)
		}
		dir := a.EffectiveDirection()
		if l.setDir(dir) {
			fwd = dir
		}
		j.hold.update(j.legs[:]...)
		body = l.nextSDP(sdp.AnswerDirection(dir), "", nil)
	}
	route := l.route
	j.mu.Unlock()
	if err := l.answerOffer(req, tx, body, sip.HeaderClone(&j.r.dialogUAFor(route).ContactHDR)); err != nil {
		return
	}
	if fwd != "" {
		go j.offerOut(1-i, fwd)
	}
}

// followCodec picks the codec leg l goes on with after its offer a: the
// one it has if still offered, else the first offered one that the other
// leg's codec can be joined to.
func (j *join) followCodec(l, other *SIPLeg, a sdp.Audio) (sdp.Codec, bool) {
	if c, ok := a.Find(l.codec.Name); ok && c.Clock == l.codec.Clock {
		return c, true
	}
	for _, c := range a.Codecs {
		if !c.Is("telephone-event") && mediaplan.Joinable(c, other.codec) {
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
	res, err := l.sendOffer(j.ended, func() string {
		j.mu.Lock()
		defer j.mu.Unlock()
		return l.nextSDP(dir, "", nil)
	})
	if errors.Is(err, errEnded) {
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
	res, err := other.request(ctx, sip.INFO, req.Body(), hdrs...)
	if err != nil {
		respond(tx, req, 408, "Request Timeout")
		return
	}
	respond(tx, req, int(res.StatusCode), res.Reason)
}

// onRefer: a trunk in a join transfers its peer (the other trunk leg) to
// a new target. The relay calls the target and swaps it in for the
// referring leg.
func (j *join) onRefer(i int, req *sip.Request, tx sip.ServerTransaction) {
	target, ok := referTarget(req, tx)
	if !ok {
		return
	}
	route := j.r.route(target.User)
	if route == nil {
		respond(tx, req, 603, "Decline", sip.NewHeader("Warning", `399 mediarelay "no route to the transfer target"`))
		return
	}
	var extra []sip.Header
	if rep, present, ok := referReplaces(target); present {
		if !ok {
			respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 mediarelay "malformed Replaces"`))
			return
		}
		extra = append(extra, sip.NewHeader("Replaces", rep.String()))
	}
	j.mu.Lock()
	old := j.legs[i]
	other := j.legs[1-i]
	// A copy of what the target is offered: the codec may change while it rings.
	peer := &SIPLeg{party: other.party, codec: other.codec, dtmf: other.dtmf}
	j.mu.Unlock()
	res := sip.NewResponseFromRequest(req, 202, "Accepted", nil)
	res.AppendHeader(sip.HeaderClone(&j.r.dialogUAFor(old.route).ContactHDR))
	if err := tx.Respond(res); err != nil {
		return
	}
	go j.transfer(i, old, peer, route, target.User, extra)
}

func (j *join) transfer(i int, old, peer *SIPLeg, route *config.Trunk, user string, extra []sip.Header) {
	ref, _ := old.ref()
	notify := func(status string, final bool) { notifyRefer(j.log, ref, status, final) }
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
		leg.drop()
		return
	default:
	}
	for _, l := range j.legs {
		_ = l.rtp.PauseReads()
	}
	j.mediaWG.Wait()
	old.stopSessionTimer()
	j.legs[i] = leg
	j.adopt(leg)
	j.r.mu.Lock()
	delete(j.r.joins, old.id)
	j.r.joins[leg.id] = j
	j.r.mu.Unlock()
	j.hold.update(j.legs[:]...)
	j.startMedia()
	j.mu.Unlock()
	j.log.Info("transferred", "target", user, "trunk", route.Name)
	notify("200 OK", true)
	old.drop()
}
