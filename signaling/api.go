package signaling

import (
	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/callapi"
)

// view is the call as the API shows it; safe from any goroutine.
func (c *Call) view() callapi.CallView {
	c.r.calls.Lock()
	to := c.to // an ng call's is set when it is answered
	c.r.calls.Unlock()
	v := callapi.CallView{
		ID: c.id, From: c.from, To: to, Trunk: c.trunkName(), Direction: c.direction,
		State: "ringing", Start: c.start.UTC(), Mode: "pending",
		Codecs: map[string]string{}, Legs: map[string]callapi.LegView{},
	}
	if c.route != nil {
		v.Transport = c.route.Transport
	}
	if a := c.answerTime(); !a.IsZero() {
		a = a.UTC()
		v.State, v.Answer = "answered", &a
	}
	if c.media.Settled() {
		plan := c.media.Plan()
		v.Mode = plan.Mode
		v.Codecs[metrics.LegWebRTC] = plan.BrowserCodec
		v.Codecs[metrics.LegSIP] = plan.SIPCodec.Name
	}
	if c.media.Started() {
		if web := c.media.Web(); web != nil {
			v.Legs[metrics.LegWebRTC] = legView(web.Transport(), web.Stats())
		}
		if sip := c.sipLeg(); sip != nil {
			v.Legs[metrics.LegSIP] = legView(sip.Transport(), sip.Stats())
		}
	}
	return v
}

func legView(transport string, s media.LegStats) callapi.LegView {
	return callapi.LegView{Transport: transport, PacketsIn: s.PacketsIn, PacketsOut: s.PacketsOut, Loss: lossFraction(s), JitterMs: s.Jitter}
}

// adminHangup ends the call on both legs on an operator's behalf; who
// goes to the CDR's ended_by.
func (c *Call) adminHangup(who string) {
	c.endedBy.CompareAndSwap(nil, &who)
	c.hangup(cdr.CauseAdminHangup, 0, "")
}

// whoEnded is a call's CDR's ended_by: the operator who hung the call up
// (nil if none), or else the side its end cause points at.
func whoEnded(cause string, operator *string) string {
	if operator != nil {
		return *operator
	}
	return cdr.WhoEnded(cause)
}

// apiCalls is the relay's calls as signaling/callapi reads and ends them.
type apiCalls struct{ r *Relay }

func (a apiCalls) Views() []callapi.CallView {
	calls := a.r.calls.List()
	views := make([]callapi.CallView, 0, len(calls))
	for _, c := range calls {
		views = append(views, c.view())
	}
	return views
}

func (a apiCalls) call(id string) *Call { return a.r.calls.Get(id) }

func (a apiCalls) View(id string) (callapi.CallView, bool) {
	if c := a.call(id); c != nil {
		return c.view(), true
	}
	return callapi.CallView{}, false
}

func (a apiCalls) Hangup(id, who string) bool {
	c := a.call(id)
	if c == nil {
		return false
	}
	a.r.log.Info("call hung up by operator", "call", c.id, "by", who)
	c.adminHangup(who)
	return true
}
