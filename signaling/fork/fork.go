// Package fork rings every browser registered as a user at once (parallel
// forking, RFC 3261 section 16.7): for a trunk's call into browsers, and a
// blind transfer to a registered user. The first to answer wins; the
// others get CANCEL with a Reason (RFC 3326), or BYE if they answer too.
// Without a winner, PickFinal says what the caller hears. The winner's
// dialog and WebRTC leg are then the call's.
package fork

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/signaling/registrar"
)

// Ringer rings browsers from the relay: its SIP host (in From and To), the
// browsers' dialog UA, and the client CANCELs are sent with.
type Ringer struct {
	host   string
	ua     *sipgo.DialogUA
	client *sipgo.Client
	log    *slog.Logger
}

// NewRinger is the relay's Ringer.
func NewRinger(host string, ua *sipgo.DialogUA, client *sipgo.Client, log *slog.Logger) *Ringer {
	return &Ringer{host: host, ua: ua, client: client, log: log}
}

// Branch is one browser being rung.
type Branch struct {
	b           *registrar.Binding
	leg         *media.WebRTCLeg
	dcs         *sipgo.DialogClientSession
	cancel      context.CancelCauseFunc
	provisional atomic.Bool
	cancelled   atomic.Bool
}

// Dialog is the branch's dialog with its browser (its INVITE's answer
// not yet ACKed when Ring returns it as the winner).
func (f *Branch) Dialog() *sipgo.DialogClientSession { return f.dcs }

// Leg is the WebRTC leg offered to the branch's browser.
func (f *Branch) Leg() *media.WebRTCLeg { return f.leg }

// Device names the branch's registered device, for logs.
func (f *Branch) Device() string { return f.b.Key }

type result struct {
	f   *Branch
	err error
}

// Ring rings bindings, each with a fresh offer from makeOffer, and
// waits until one answers, all refuse, ctx ends (CANCEL with a 408
// reason) or gone closes (the caller gave up: 487). A 6xx ends the search
// (RFC 3261 16.7). onRinging runs on the first ringing response. The
// winner's answer is not yet ACKed; the other forks are CANCELled, or hung
// up if they answer too. Without a winner it returns the browsers' final
// responses; rung is false when no INVITE could be sent at all. log is
// the call's.
func (r *Ringer) Ring(ctx context.Context, log *slog.Logger, bindings []*registrar.Binding, makeOffer func() (*media.WebRTCLeg, string, error),
	party Party, onRinging func(), gone <-chan struct{}) (winner *Branch, finals []*sip.Response, rung bool) {
	forks := r.ring(ctx, log, bindings, makeOffer, party)
	if len(forks) == 0 {
		return nil, nil, false
	}
	results := waitForks(ctx, forks, onRinging)
	pending := len(forks)
	ringDone := ctx.Done()
	for pending > 0 && winner == nil {
		select {
		case res := <-results:
			pending--
			var dr *sipgo.ErrDialogResponse
			switch {
			case res.err == nil:
				winner = res.f
			case errors.As(res.err, &dr):
				finals = append(finals, dr.Res)
				res.f.leg.Close()
				if code := dr.Res.StatusCode; code >= 600 {
					r.cancelForks(forks, nil, `SIP;cause=600;text="Busy Everywhere"`)
					r.byeLateAnswers(results, pending)
					pending = 0
				}
			default:
				res.f.leg.Close()
			}
		case <-gone:
			gone, ringDone = nil, nil
			r.cancelForks(forks, nil, `SIP;cause=487;text="Request Terminated"`)
		case <-ringDone:
			gone, ringDone = nil, nil
			r.cancelForks(forks, nil, `SIP;cause=408;text="Request Timeout"`)
		}
	}
	if winner != nil {
		r.cancelForks(forks, winner, `SIP;cause=200;text="Call completed elsewhere"`)
		go r.byeLateAnswers(results, pending)
	}
	return winner, finals, true
}

// ring sends an INVITE with a fresh WebRTC offer to each binding.
// Party says who calls whom in the INVITEs to browsers: the caller's
// display name and user, the called user, and headers passed on.
type Party struct {
	Name, From, To string
	Extra          []sip.Header
}

// ring sends each binding an INVITE with a fresh offer.
func (r *Ringer) ring(ctx context.Context, log *slog.Logger, bindings []*registrar.Binding, makeOffer func() (*media.WebRTCLeg, string, error), party Party) []*Branch {
	var forks []*Branch
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range bindings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leg, offer, err := makeOffer()
			if err != nil {
				log.Warn("webrtc offer failed", "err", err)
				return
			}
			req := sip.NewRequest(sip.INVITE, *b.Contact.Address.Clone())
			req.SetBody([]byte(offer))
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			from := &sip.FromHeader{DisplayName: party.Name, Address: sip.Uri{User: party.From, Host: r.host}, Params: sip.NewParams()}
			from.Params.Add("tag", sip.GenerateTagN(16))
			req.AppendHeader(from)
			req.AppendHeader(&sip.ToHeader{Address: sip.Uri{User: party.To, Host: r.host}})
			for _, h := range party.Extra {
				req.AppendHeader(sip.HeaderClone(h))
			}
			req.SetTransport(strings.ToUpper(b.Transport))
			req.SetDestination(b.Source)
			f := &Branch{b: b, leg: leg}
			dcs, err := r.ua.WriteInvite(ctx, req)
			if err != nil {
				log.Warn("browser unreachable", "device", b.Key, "err", err)
				leg.Close()
				return
			}
			f.dcs = dcs
			mu.Lock()
			forks = append(forks, f)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return forks
}

// waitForks waits for each fork's answer on its own goroutine and reports
// it on the returned channel; onRinging runs on a fork's first ringing
// response. The end of ctx cancels a fork's wait (and sipgo then sends a
// CANCEL), except for a fork the relay has already CANCELled itself
// (cancelForks): that one waits for its 487, and a second CANCEL on the
// same branch would go unanswered.
func waitForks(ctx context.Context, forks []*Branch, onRinging func()) chan result {
	results := make(chan result, len(forks))
	for _, f := range forks {
		fctx, fcancel := context.WithCancelCause(context.WithoutCancel(ctx))
		f.cancel = fcancel
		stop := context.AfterFunc(ctx, func() {
			if !f.cancelled.Load() {
				fcancel(context.Cause(ctx))
			}
		})
		go func() {
			defer stop()
			defer fcancel(nil)
			err := f.dcs.WaitAnswer(fctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
				if res.IsProvisional() && res.StatusCode != 100 {
					f.provisional.Store(true)
					onRinging()
				}
				return nil
			}})
			results <- result{f, err}
		}()
	}
	return results
}

// cancelForks stops every fork but keep: a CANCEL carrying reason where a
// provisional response allows one, else the wait is abandoned.
func (r *Ringer) cancelForks(forks []*Branch, keep *Branch, reason string) {
	for _, f := range forks {
		if f == keep || !f.cancelled.CompareAndSwap(false, true) {
			continue
		}
		if f.provisional.Load() && f.dcs.InviteResponse != nil {
			go r.sendCancel(f, reason)
			continue
		}
		f.cancel(sipgo.WaitAnswerForceCancelErr)
	}
}

// sendCancel sends a CANCEL with a Reason header (RFC 3326) for a fork's
// INVITE; the INVITE transaction then ends with 487.
func (r *Ringer) sendCancel(f *Branch, reason string) {
	inv := f.dcs.InviteRequest
	cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
	cancel.AppendHeader(sip.HeaderClone(inv.Via()))
	cancel.AppendHeader(sip.HeaderClone(inv.From()))
	cancel.AppendHeader(sip.HeaderClone(inv.To()))
	cancel.AppendHeader(sip.HeaderClone(inv.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	if reason != "" {
		cancel.AppendHeader(sip.NewHeader("Reason", reason))
	}
	cancel.SetTransport(inv.Transport())
	cancel.SetDestination(f.b.Source)
	ctx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if _, err := r.client.Do(ctx, cancel); err != nil {
		r.log.Debug("cancel failed", "device", f.b.Key, "err", err)
		f.cancel(sipgo.WaitAnswerForceCancelErr)
		return
	}
	// The device owes a 487; don't wait for it forever.
	time.AfterFunc(cancelAnswerWait, func() { f.cancel(sipgo.WaitAnswerForceCancelErr) })
}

// cancelAnswerWait is how long a CANCELled fork waits for its 487.
const cancelAnswerWait = 5 * time.Second

// byeLateAnswers waits for the pending forks and ends those that answer
// (after another won, or after a 6xx).
func (r *Ringer) byeLateAnswers(results chan result, pending int) {
	for ; pending > 0; pending-- {
		res := <-results
		if res.err == nil {
			r.HangUp(res.f)
		} else {
			res.f.leg.Close()
		}
	}
}

// HangUp ends a branch that answered but is not wanted (the caller gave
// up, or its answer was unusable): ACK, BYE, and its leg closed.
func (r *Ringer) HangUp(f *Branch) {
	_ = f.dcs.Ack(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.dcs.Bye(ctx)
	f.leg.Close()
}

// PickFinal chooses what the caller hears when no browser answered: 6xx
// first, then busy, then the lowest other code; and the call's end cause.
func PickFinal(finals []*sip.Response) (int, string, string) {
	var best *sip.Response
	for _, res := range finals {
		switch {
		case best == nil:
			best = res
		case res.StatusCode >= 600 && best.StatusCode < 600:
			best = res
		case best.StatusCode >= 600:
		case res.StatusCode == 486 && best.StatusCode != 486:
			best = res
		case best.StatusCode != 486 && res.StatusCode < best.StatusCode:
			best = res
		}
	}
	if best == nil {
		return 480, "Temporarily Unavailable", cdr.CauseNoAnswer
	}
	code := int(best.StatusCode)
	switch {
	case code == 486 || code == 600 || code == 603:
		return code, best.Reason, cdr.CauseBusy
	case code == 408 || code == 480 || code == 487:
		return 480, "Temporarily Unavailable", cdr.CauseNoAnswer
	case code >= 400 && code < 700 && code != 401 && code != 407:
		return code, best.Reason, cdr.CauseRejected
	}
	return 480, "Temporarily Unavailable", cdr.CauseRejected
}
