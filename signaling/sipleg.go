package signaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// dialog is one SIP dialog the relay is a party to: it placed the call
// (dcs), or the peer did (dss).
type dialog struct {
	dcs    *sipgo.DialogClientSession
	dss    *sipgo.DialogServerSession
	id     string // sipgo's dialog id, "" until the dialog is confirmed
	callID string
}

func clientDialog(d *sipgo.DialogClientSession) dialog {
	return dialog{dcs: d, id: d.ID, callID: d.InviteRequest.CallID().Value()}
}

func serverDialog(d *sipgo.DialogServerSession) dialog {
	return dialog{dss: d, id: d.ID, callID: d.InviteRequest.CallID().Value()}
}

// exists says whether the dialog has a session to send requests in.
func (d *dialog) exists() bool { return d.dcs != nil || d.dss != nil }

// placedByPeer says the peer sent the INVITE: the relay is its UAS.
func (d *dialog) placedByPeer() bool { return d.dss != nil }

// ref is the dialog, for requests the relay sends in it.
func (d *dialog) ref() (dialogRef, error) {
	switch {
	case d.dcs != nil:
		return clientRef(d.dcs), nil
	case d.dss != nil:
		return serverRef(d.dss), nil
	}
	return dialogRef{}, errNoDialog
}

var errNoDialog = errors.New("no dialog")

// request sends a request in the dialog and waits for its final response;
// a 2xx to an INVITE is ACKed.
func (d *dialog) request(ctx context.Context, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	ref, err := d.ref()
	if err != nil {
		return nil, err
	}
	return ref.request(ctx, method, body, hdrs...)
}

func (d *dialog) bye(ctx context.Context) error {
	switch {
	case d.dcs != nil:
		return d.dcs.Bye(ctx)
	case d.dss != nil:
		return d.dss.Bye(ctx)
	}
	return nil
}

// readAck takes the ACK of the relay's 2xx on a dialog the peer placed,
// and reports whether there was one to take.
func (d *dialog) readAck(req *sip.Request, tx sip.ServerTransaction) bool {
	if d.dss == nil {
		return false
	}
	_ = d.dss.ReadAck(req, tx)
	return true
}

// readBye answers a BYE the peer sent in the dialog.
func (d *dialog) readBye(req *sip.Request, tx sip.ServerTransaction) {
	switch {
	case d.dcs != nil:
		_ = d.dcs.ReadBye(req, tx)
	case d.dss != nil:
		_ = d.dss.ReadBye(req, tx)
	default:
		respond(tx, req, 200, "OK")
	}
}

// SIPLeg is one SIP dialog of a relayed call and what the relay keeps for
// it: the dialog, the RTP leg (nil on a browser's dialog, whose media is
// the WebRTC leg), the relay's SDP and its version, the direction the peer
// last asked for, the offer/answer state (an offer of the relay's
// outstanding; an answer due in the ACK), and the RFC 4028 session timer.
// What is sent on one dialog alone is built and sent here: the next SDP,
// re-INVITEs and their answers, session refreshes, DTMF INFO. A browser↔trunk Call has two (browser and
// trunk); a join of two trunk legs has two trunk legs. A transfer moves a
// leg from a Call to a join, or swaps one in, without converting it.
//
// The SDP, direction and codec fields are guarded by the lock of the call
// or join holding the leg (Call.mid.mu, join.mu); the session timer and
// offer state guard themselves.
type SIPLeg struct {
	dialog
	route *config.Trunk // the trunk on the far end; nil on a browser's dialog
	party string        // the far end's number, for a join's CDR
	rtp   *media.RTPLeg
	// codec and dtmf are what a join forwards on the leg (PT 0: no
	// telephone-event); a Call keeps them in its media plan.
	codec, dtmf sdp.Codec
	sdp         string // the relay's SDP on this dialog, the base of later ones
	ver         uint64 // o= version of the relay's last SDP; 0: take sdp's
	dir         string // the direction the far end last asked for

	// lateOffer: the peer's INVITE had no SDP, so the relay offered in its
	// 200 and the ACK answers; lateDone: that answer was taken.
	lateOffer bool
	lateDone  atomic.Bool

	// offerMu is held while an offer of the relay's is out on the dialog:
	// one at a time; offering says so to the peer's offers (glare, 491).
	offerMu  sync.Mutex
	offering atomic.Bool

	timer sessionTimer
	srtp  legSecurity // what dialTrunk negotiated
}

// legSecurity is the SRTP state of a leg dialTrunk set up.
type legSecurity struct {
	policy, suite string
	keyed         bool
}

// drop ends a leg that never made it into a call or join.
func (l *SIPLeg) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.bye(ctx)
	_ = l.rtp.Close()
}

// setRemote points the RTP leg at the media address of the peer's SDP.
func (l *SIPLeg) setRemote(a sdp.Audio) {
	if l.rtp != nil {
		setLegRemote(l.rtp, a)
	}
}

// setDir records the direction the peer asked for and reports whether it
// changed (an absent direction is sendrecv).
func (l *SIPLeg) setDir(dir string) (changed bool) {
	changed = l.dir != dir && !(l.dir == "" && dir == "sendrecv")
	l.dir = dir
	return changed
}

// askedDir is the direction the peer last asked for on the leg, sendrecv
// until it asked for one: what the relay offers the other party of the
// call or join.
func (l *SIPLeg) askedDir() string { return firstNonEmpty(l.dir, "sendrecv") }

// nextSDP is the relay's SDP on the leg with direction dir and a new
// version, rewritten from the leg's last one: setup, if not empty,
// replaces a=setup; codecs, if not nil, replace the audio formats (a
// call's codec may have changed since its first SDP listed all it
// offered).
func (l *SIPLeg) nextSDP(dir, setup string, codecs []sdp.Codec) string {
	if l.ver == 0 {
		l.ver = sdp.Version(l.sdp)
	}
	l.ver++
	body := l.sdp
	if codecs != nil {
		body = sdp.SetCodecs(body, codecs)
	}
	return sdp.Rewrite(body, dir, l.ver, setup)
}

// errEnded is an offer not sent because the call or join ended.
var errEnded = errors.New("call ended")

// sendOffer sends a re-INVITE with the SDP that body makes and waits for
// its answer (ACKing a 2xx). Offers of the relay's go out one at a time
// per dialog; body runs once this one's turn has come, after offering is
// set, so a peer's offer from then on is glare. A 2xx's SDP moves the RTP
// leg's remote.
func (l *SIPLeg) sendOffer(ended <-chan struct{}, body func() string) (*sip.Response, error) {
	l.offerMu.Lock()
	defer l.offerMu.Unlock()
	select {
	case <-ended:
		return nil, errEnded
	default:
	}
	l.offering.Store(true)
	defer l.offering.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := l.request(ctx, sip.INVITE, []byte(body()), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil || !res.IsSuccess() {
		return res, err
	}
	if _, a, err := sdp.Parse(res.Body()); err == nil && len(res.Body()) > 0 {
		l.setRemote(a)
	}
	return res, nil
}

// answerOffer answers the peer's re-INVITE or UPDATE on the leg with 200
// and body (none for a refresh), the session timer the request asks for,
// and the relay's Contact.
func (l *SIPLeg) answerOffer(req *sip.Request, tx sip.ServerTransaction, body string, contact sip.Header) error {
	res := okWithSDP(req, body)
	l.acceptSessionTimer(req, res)
	res.AppendHeader(contact)
	return tx.Respond(res)
}

// sendInfo sends one digit on the leg as application/dtmf-relay INFO and
// waits for the answer.
func (l *SIPLeg) sendInfo(digit byte, dur time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body := fmt.Sprintf("Signal=%c\r\nDuration=%d\r\n", digit, dur.Milliseconds())
	_, err := l.request(ctx, sip.INFO, []byte(body), sip.NewHeader("Content-Type", "application/dtmf-relay"))
	return err
}

// ackAnswer is the SDP answer in the peer's ACK to the offer the relay
// made in its 200 because the peer's INVITE had none (lateOffer); only the
// first ACK with a body counts.
func (l *SIPLeg) ackAnswer(req *sip.Request) ([]byte, bool) {
	if !l.lateOffer || len(req.Body()) == 0 || !l.lateDone.CompareAndSwap(false, true) {
		return nil, false
	}
	return req.Body(), true
}

// okWithSDP is a 200 to req carrying body as SDP, or no body if empty.
func okWithSDP(req *sip.Request, body string) *sip.Response {
	if body == "" {
		return sip.NewResponseFromRequest(req, 200, "OK", nil)
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	return res
}

// Session timers (RFC 4028) ----------------------------------------------

const endSessionTime = "session_expired"

// minSE is the shortest session interval the relay accepts (RFC 4028's
// 90 s; a variable so tests can shorten it).
var minSE = 90 * time.Second

// sessionTimer is a dialog's session timer as negotiated: se is 0 without
// one; weRefresh says the relay sends the refreshes.
type sessionTimer struct {
	mu        sync.Mutex
	se        time.Duration
	weRefresh bool
	t         *time.Timer
	gen       uint64 // bumped by each arm and stop: a refresh in flight re-arms only if unchanged
	log       *slog.Logger
	expire    func() // ends the call or join the leg is in
}

// adoptSessionTimer makes the call or join that now holds the leg the one
// the timer ends (expire) and logs for.
func (l *SIPLeg) adoptSessionTimer(log *slog.Logger, expire func()) {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	l.timer.log, l.timer.expire = log, expire
}

// setSessionTimer records a negotiated interval and who refreshes, and
// (re)starts the clock.
func (l *SIPLeg) setSessionTimer(se time.Duration, weRefresh bool) {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	l.timer.se, l.timer.weRefresh = se, weRefresh
	l.armLocked()
}

// armSessionTimer (re)starts the clock of the leg's session timer, if it
// has one.
func (l *SIPLeg) armSessionTimer() {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	l.armLocked()
}

// armLocked starts the clock; timer.mu is held. When the relay refreshes
// it sends UPDATE at half the interval; when the peer does, the call ends
// if no refresh comes before the interval minus min(32 s, a third of it)
// (RFC 4028 section 10).
func (l *SIPLeg) armLocked() {
	st := &l.timer
	if st.t != nil {
		st.t.Stop()
	}
	st.gen++
	if st.se <= 0 || st.expire == nil {
		return
	}
	gen, se, log, expire := st.gen, st.se, st.log, st.expire
	if st.weRefresh {
		st.t = time.AfterFunc(se/2, func() { l.refreshSession(gen) })
		return
	}
	grace := min(32*time.Second, se/3)
	st.t = time.AfterFunc(se-grace, func() {
		log.Info("session timer expired: no refresh from the trunk", "leg", l.callID, "interval", se)
		expire()
	})
}

// stopSessionTimer stops the clock (the leg's call or join ended, or the
// leg left it).
func (l *SIPLeg) stopSessionTimer() {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	if l.timer.t != nil {
		l.timer.t.Stop()
	}
	l.timer.gen++
}

// sessionTimer is the interval and whether the relay refreshes.
func (l *SIPLeg) sessionTimer() (time.Duration, bool) {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	return l.timer.se, l.timer.weRefresh
}

// refreshSession sends a session refresh (UPDATE without SDP) and re-arms
// the timer; a failure ends the leg's call or join. gen is the arming that
// scheduled it: a refresh the timer has since been re-armed or stopped
// for does nothing.
func (l *SIPLeg) refreshSession(gen uint64) {
	l.timer.mu.Lock()
	se, log, expire := l.timer.se, l.timer.log, l.timer.expire
	current := l.timer.gen == gen
	l.timer.mu.Unlock()
	if !current {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := l.request(ctx, sip.UPDATE, nil,
		sip.NewHeader("Session-Expires", formatSE(se, "uac")), sip.NewHeader("Supported", "timer"))
	if err != nil || (res.StatusCode != 200 && res.StatusCode != 405 && res.StatusCode != 501) {
		log.Info("session refresh failed", "leg", l.callID, "err", err)
		expire()
		return
	}
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	if l.timer.gen == gen {
		l.armLocked()
	}
}

// acceptSessionTimer applies the Session-Expires of the peer's request to
// the relay's 2xx res: the requester refreshes unless it asks the relay
// to (RFC 4028 section 9), and the relay does not take the role over. Any
// offer or refresh from the peer restarts the clock.
func (l *SIPLeg) acceptSessionTimer(req *sip.Request, res *sip.Response) {
	se, refresher, ok := sessionExpires(req)
	if !ok {
		l.armSessionTimer()
		return
	}
	// Roles are those of this transaction: the peer sent the request, so
	// it is the UAC.
	if refresher != "uas" {
		refresher = "uac"
	}
	res.AppendHeader(sip.NewHeader("Session-Expires", formatSE(se, refresher)))
	if sup := req.GetHeader("Supported"); sup != nil && strings.Contains(strings.ToLower(sup.Value()), "timer") {
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
	l.setSessionTimer(se, refresher == "uas")
}

// answeredSessionTimer applies the Session-Expires of a 2xx to the relay's
// INVITE (the relay was the UAC).
func (l *SIPLeg) answeredSessionTimer(res *sip.Response) {
	if se, refresher, ok := sessionExpires(res); ok {
		l.setSessionTimer(se, refresher != "uas")
	}
}

// sessionExpires reads Session-Expires (compact form x): "1800;refresher=uac".
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

// formatSE is a Session-Expires value.
func formatSE(se time.Duration, refresher string) string {
	return fmt.Sprintf("%d;refresher=%s", int(se.Seconds()), refresher)
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

// Hold --------------------------------------------------------------------

// holdState is whether a call or join is on hold: either leg asked for a
// direction other than sendrecv. The media timeout does not count while
// held, and counts from the last resume after.
type holdState struct {
	held    atomic.Bool
	resumed atomic.Int64 // unix ns of the last resume
}

// update sets the hold flag from the legs' directions.
func (h *holdState) update(legs ...*SIPLeg) {
	held := false
	for _, l := range legs {
		if l != nil && l.askedDir() != "sendrecv" {
			held = true
		}
	}
	if h.held.Swap(held) && !held {
		h.resumed.Store(time.Now().UnixNano())
	}
}

// since is when the media timeout starts counting: base (the answer), or
// the last resume from hold if later.
func (h *holdState) since(base time.Time) time.Time {
	if ns := h.resumed.Load(); ns != 0 {
		if t := time.Unix(0, ns); t.After(base) {
			return t
		}
	}
	return base
}

// silent says whether a call answered at start has had no media on a leg
// for longer than timeout (0: no limit), counting from start or the last
// resume from hold; never while on hold.
func (h *holdState) silent(now, start time.Time, timeout time.Duration, legs ...statsSource) bool {
	if timeout <= 0 || h.held.Load() {
		return false
	}
	base := h.since(start)
	for _, l := range legs {
		since := base
		if lr := l.Stats().LastReceived; lr.After(since) {
			since = lr
		}
		if now.Sub(since) > timeout {
			return true
		}
	}
	return false
}

// Packet counts -----------------------------------------------------------

// legCounts is what of a call's leg statistics is already in the relay's
// packet and byte counters, per leg: the legs keep their own counts (the
// packet path touches no shared counter) and the relay adds what is new
// at each scrape and at the call's end.
type legCounts struct {
	mu   sync.Mutex
	legs [2]any // the legs counted; a transfer may swap one in
	last [2]media.LegStats
}

// statsSource is a media leg as the counters see it.
type statsSource interface{ Stats() media.LegStats }

// countMoved adds to the relay's counters what legs a and b moved since
// they were last counted in n; a is the WebRTC leg when aIsWeb, else both
// are SIP legs.
func (r *Relay) countMoved(n *legCounts, a, b statsSource, aIsWeb bool) {
	as, bs := a.Stats(), b.Stats()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, l := range [2]any{a, b} {
		if n.legs[i] != l {
			n.legs[i], n.last[i] = l, media.LegStats{}
		}
	}
	da, db := since(as, n.last[0]), since(bs, n.last[1])
	if aIsWeb {
		r.countLegs(da, db)
	} else {
		r.countLegs(media.LegStats{}, da)
		r.countLegs(media.LegStats{}, db)
	}
	n.last = [2]media.LegStats{as, bs}
}
