// Package join owns the trunk-to-trunk calls a transfer leaves behind: two
// trunk legs (signaling/sipleg) relayed to each other, with the relay in
// the media path. It is what is left of a browser's call when the browser
// hands its trunk peer on to a number that routes to a trunk (blind
// REFER), or connects the trunk peers of two of its calls (attended
// transfer, REFER with Replaces). Each trunk leg keeps its dialog, media
// port, codec and keys; the browser legs are gone. Media passes through
// unchanged but for the RTP header, so both legs carry the same codec, or
// G.711's two laws, converted byte by byte; nothing is decoded.
//
// A join keeps hold, session timers, INFO and further REFERs on its legs,
// and ends when either leg hangs up or goes silent. Joins files the joins
// in progress under their legs' dialogs for the router. What only the
// relay can do (its Contact, routing and dialling a transfer target,
// counting and recording the join's end) it asks of its Host.
package join

import (
	"context"
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

// Direction is the CDR direction of a join.
const Direction = "transfer"

// Host is what a join needs of the relay that runs it.
type Host interface {
	// Contact is the relay's Contact header for responses on a dialog
	// with route's trunk.
	Contact(route *config.Trunk) sip.Header
	// Route is the trunk that user's number routes to; nil if none.
	Route(user string) *config.Trunk
	// Dial calls user through route as fromUser, offering codec (and
	// dtmf, if its PT is not 0; and G.711's other law, which a join
	// converts) and the extra headers (Replaces), and returns the
	// answered leg; or nil and a status line for a NOTIFY. It gives up
	// when ended closes.
	Dial(ended <-chan struct{}, route *config.Trunk, user, fromUser string, codec, dtmf sdp.Codec, extra []sip.Header) (*sipleg.Leg, string)
	// CountDrop counts a packet the forwarding dropped, by reason.
	CountDrop(reason string)
	// Ended counts and records the end of j (its legs are closed and it
	// is no longer filed): rec is its CDR. An error is the CDR's.
	Ended(j *Join, rec cdr.Record) error
}

// Joins is a relay's joins in progress, each filed under both its legs'
// dialog ids: where the router finds the join an in-dialog request
// belongs to.
type Joins struct {
	host         Host
	log          *slog.Logger
	mediaTimeout time.Duration

	mu       sync.Mutex // guards byDialog, and a join's legs as the router reads them
	byDialog map[string]*Join
}

// New is a relay's set of joins: h does what only the relay can, log is
// the relay's, and a join whose legs have no media for mediaTimeout (0:
// no limit) ends.
func New(h Host, log *slog.Logger, mediaTimeout time.Duration) *Joins {
	return &Joins{host: h, log: log, mediaTimeout: mediaTimeout, byDialog: map[string]*Join{}}
}

// Join is two trunk legs relayed to each other.
type Join struct {
	g        *Joins
	id       string
	log      *slog.Logger
	from, to string
	start    time.Time

	mu      sync.Mutex // guards legs and their SDP state; a swap also holds g.mu
	legs    [2]*sipleg.Leg
	hold    sipleg.Hold
	mediaWG sync.WaitGroup

	once  sync.Once
	ended chan struct{}
	cause string

	counted media.Tally // what the relay's metrics have of its legs' packets
}

// Start relays a and b to each other under the call id id until either
// hangs up. Their session timers end the join from now on.
func (g *Joins) Start(id string, a, b *sipleg.Leg) *Join {
	j := &Join{g: g, id: id, legs: [2]*sipleg.Leg{a, b}, from: a.Party(), to: b.Party(),
		start: time.Now(), ended: make(chan struct{})}
	j.log = g.log.With("call", j.id, "trunk", a.Route().Name, "trunk2", b.Route().Name)
	g.mu.Lock()
	g.byDialog[a.ID()] = j
	g.byDialog[b.ID()] = j
	g.mu.Unlock()
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

// Find is the join an in-dialog request belongs to and the index of the
// leg that sent it; nil if none.
func (g *Joins) Find(req *sip.Request) (*Join, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.byDialog) == 0 {
		return nil, -1
	}
	uas, _ := sip.DialogIDFromRequestUAS(req) // the trunk placed the leg
	uac, _ := sip.DialogIDFromRequestUAC(req) // the relay placed it
	for _, id := range []string{uas, uac} {
		j := g.byDialog[id]
		if j == nil {
			continue
		}
		for i, l := range j.legs {
			if l.ID() == id && l.PlacedByPeer() == (id == uas) {
				return j, i
			}
		}
	}
	return nil, -1
}

// List is a snapshot of the joins in progress.
func (g *Joins) List() []*Join {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := make(map[*Join]bool, len(g.byDialog))
	joins := make([]*Join, 0, len(g.byDialog)/2)
	for _, j := range g.byDialog { // each join is filed under both its dialogs
		if !seen[j] {
			seen[j] = true
			joins = append(joins, j)
		}
	}
	return joins
}

// Len is the number of joins in progress.
func (g *Joins) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.byDialog) / 2 // a join is filed under both its dialogs
}

// Trunk is the trunk of the join's first leg, for labels.
func (j *Join) Trunk() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.legs[0].Route().Name
}

// Moved is what the join's legs moved since the relay last counted them
// (media.Tally). Both are trunk legs.
func (j *Join) Moved() (a, b media.LegStats) {
	j.mu.Lock()
	legs := j.legs
	j.mu.Unlock()
	return j.counted.Moved(legs[0].RTP(), legs[1].RTP())
}

// startMedia runs one forwarder per direction; j.mu is held.
func (j *Join) startMedia() {
	for i := range j.legs {
		src, dst := j.legs[i], j.legs[1-i]
		_ = src.RTP().ResumeReads()
		sc, sd := src.Codecs()
		dc, dd := dst.Codecs()
		pts := map[uint8]uint8{sc.PT: dc.PT}
		if sd.PT != 0 && dd.PT != 0 && sd.Clock == dd.Clock {
			pts[sd.PT] = dd.PT
		}
		o := media.ForwarderOptions{PTMap: pts, ClockRate: dc.Clock, OnDrop: j.g.host.CountDrop}
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
func (j *Join) adopt(l *sipleg.Leg) {
	l.AdoptSessionTimer(j.log, func() { j.hangup(cdr.CauseSessionExpired, -1) })
	l.ArmSessionTimer()
}

// restartMedia stops both forwarders and starts them again on the current
// legs and codecs; j.mu is held.
func (j *Join) restartMedia() {
	for _, l := range j.legs {
		_ = l.RTP().PauseReads()
	}
	j.mediaWG.Wait()
	j.startMedia()
}

// watch ends the join when media stops on either leg (unless held).
func (j *Join) watch() {
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
			if j.hold.Silent(now, j.start, j.g.mediaTimeout, a, b) {
				j.hangup(cdr.CauseMediaTimeout, -1)
				return
			}
		}
	}
}

// Hangup ends the join with cause (the relay shuts down): BYE to both
// legs, media closed, the CDR written.
func (j *Join) Hangup(cause string) { j.hangup(cause, -1) }

// hangup ends the join once: BYE to every leg but the one that sent BYE
// (from; -1 for none), media closed, the CDR written.
func (j *Join) hangup(cause string, from int) {
	j.once.Do(func() {
		j.mu.Lock()
		j.cause = cause
		close(j.ended)
		legs := j.legs
		var codecs [2]string
		for i, l := range legs {
			c, _ := l.Codecs()
			codecs[i] = c.Name
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

// finish unfiles the join and has the relay count and record its end.
func (j *Join) finish(legs [2]*sipleg.Leg, codecs [2]string) {
	end := time.Now()
	g := j.g
	g.mu.Lock()
	for _, l := range legs {
		if g.byDialog[l.ID()] == j {
			delete(g.byDialog, l.ID())
		}
	}
	g.mu.Unlock()
	a, b := legs[0], legs[1]
	trunk := a.Route().Name
	if b.Route().Name != trunk {
		trunk += "," + b.Route().Name
	}
	// A join has no browser leg: the Browser* and WebRTC* fields describe
	// the second trunk leg (see cdr.Record).
	rec := cdr.Record{
		CallID: j.id, TrunkCallID: a.CallID(), BrowserCallID: b.CallID(),
		From: j.from, To: j.to, Trunk: trunk, Direction: Direction,
		Start: j.start, Answer: j.start, End: end, EndCause: j.cause, EndedBy: cdr.WhoEnded(j.cause), SIPCode: 200,
		Mode: mediaplan.ModePassthrough, SIPCodec: codecs[0], WebRTCCodec: codecs[1],
	}
	if !strings.EqualFold(codecs[0], codecs[1]) {
		rec.Mode = mediaplan.ModeTranscode // G.711 law conversion, as calls record it
	}
	if err := g.host.Ended(j, rec); err != nil {
		j.log.Error("cdr not written", "err", err)
	}
	j.log.Info("call ended", "cause", j.cause, "duration", end.Sub(j.start).Round(time.Millisecond).String())
}

// Legs are the join's two trunk legs now (a transfer may swap one).
func (j *Join) Legs() [2]*sipleg.Leg {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.legs
}
