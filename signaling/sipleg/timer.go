package sipleg

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Session timers (RFC 4028).

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

// AdoptSessionTimer makes the call or join that now holds the leg the one
// the timer ends (expire) and logs for.
func (l *Leg) AdoptSessionTimer(log *slog.Logger, expire func()) {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	l.timer.log, l.timer.expire = log, expire
}

// SetSessionTimer records a negotiated interval and who refreshes, and
// (re)starts the clock.
func (l *Leg) SetSessionTimer(se time.Duration, weRefresh bool) {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	l.timer.se, l.timer.weRefresh = se, weRefresh
	l.armLocked()
}

// ArmSessionTimer (re)starts the clock of the leg's session timer, if it
// has one.
func (l *Leg) ArmSessionTimer() {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	l.armLocked()
}

// armLocked starts the clock; timer.mu is held. When the relay refreshes
// it sends UPDATE at half the interval; when the peer does, the call ends
// if no refresh comes before the interval minus min(32 s, a third of it)
// (RFC 4028 section 10).
func (l *Leg) armLocked() {
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

// StopSessionTimer stops the clock (the leg's call or join ended, or the
// leg left it).
func (l *Leg) StopSessionTimer() {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	if l.timer.t != nil {
		l.timer.t.Stop()
	}
	l.timer.gen++
}

// SessionTimer is the interval (0: none) and whether the relay refreshes.
func (l *Leg) SessionTimer() (time.Duration, bool) {
	l.timer.mu.Lock()
	defer l.timer.mu.Unlock()
	return l.timer.se, l.timer.weRefresh
}

// refreshSession sends a session refresh (UPDATE without SDP) and re-arms
// the timer; a failure ends the leg's call or join. gen is the arming that
// scheduled it: a refresh the timer has since been re-armed or stopped
// for does nothing.
func (l *Leg) refreshSession(gen uint64) {
	l.timer.mu.Lock()
	se, log, expire := l.timer.se, l.timer.log, l.timer.expire
	current := l.timer.gen == gen
	l.timer.mu.Unlock()
	if !current {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := l.Request(ctx, sip.UPDATE, nil,
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

// AcceptSessionTimer applies the Session-Expires of the peer's request to
// the relay's 2xx res: the requester refreshes unless it asks the relay
// to (RFC 4028 section 9), and the relay does not take the role over. Any
// offer or refresh from the peer restarts the clock.
func (l *Leg) AcceptSessionTimer(req *sip.Request, res *sip.Response) {
	se, refresher, ok := SessionExpires(req)
	if !ok {
		l.ArmSessionTimer()
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
	l.SetSessionTimer(se, refresher == "uas")
}

// AnsweredSessionTimer applies the Session-Expires of a 2xx to the
// relay's INVITE (the relay was the UAC).
func (l *Leg) AnsweredSessionTimer(res *sip.Response) {
	if se, refresher, ok := SessionExpires(res); ok {
		l.SetSessionTimer(se, refresher != "uas")
	}
}

// SessionExpires reads Session-Expires (compact form x) of a request or
// response, "1800;refresher=uac": the interval and the refresher ("" if
// not named); false when absent or unreadable.
func SessionExpires(msg interface{ GetHeader(string) sip.Header }) (time.Duration, string, bool) {
	h := msg.GetHeader("Session-Expires")
	if h == nil {
		h = msg.GetHeader("x")
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
