package signaling

import (
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/signaling/dtmf"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// A call's DTMF (signaling/dtmf does the packets): INFO from the trunk is
// played to the browser by the injector on the trunk → browser direction;
// towards a trunk with dtmf: info, the browser's telephone-events become
// INFO requests on the trunk's dialog.

// sipReader is what the trunk → browser direction reads from.
func (c *Call) sipReader() media.RTPReader {
	c.dtmfOnce.Do(func() { c.inj.Store(dtmf.NewInjector(c.sipLeg())) })
	return c.inj.Load()
}

// sipWriter is what the browser → trunk direction writes to: the RTP leg,
// or, for a trunk that takes DTMF as INFO, a filter turning events into INFO.
func (c *Call) sipWriter() media.RTPWriter { return c.sipWriterFor(c.currentPlan()) }

// sipWriterFor is sipWriter for plan, which may not be the call's yet
// (a codec change builds the stages of a new plan before switching).
func (c *Call) sipWriterFor(plan mediaplan.Plan) media.RTPWriter {
	c.r.mu.Lock() // a transfer may change the route and the leg
	route, leg := c.route, c.trunk.RTP()
	c.r.mu.Unlock()
	if route == nil || !strings.EqualFold(route.DTMF, "info") || plan.SIPDTMF.PT == 0 {
		return leg
	}
	return dtmf.NewToInfo(leg, plan.SIPDTMF.PT, plan.SIPDTMF.Clock, func(digit byte, dur time.Duration) {
		go func() {
			// The leg is looked up when the INFO goes: a transfer may have
			// swapped the trunk leg since the packet came.
			if err := c.legNow(sideTrunk).SendInfo(digit, dur); err != nil {
				c.log.Debug("dtmf info failed", "err", err)
			}
		}()
	})
}

// onInfo takes DTMF from the trunk as INFO and plays it to the browser.
func (c *Call) onInfo(s side, req *sip.Request, tx sip.ServerTransaction) {
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = strings.ToLower(strings.TrimSpace(h.Value()))
	}
	if len(req.Body()) == 0 {
		sipleg.Respond(tx, req, 200, "OK") // keep-alive style INFO
		return
	}
	digit, dur, ok := dtmf.ParseInfo(ct, string(req.Body()))
	if !ok {
		sipleg.Respond(tx, req, 415, "Unsupported Media Type", sip.NewHeader("Accept", "application/dtmf-relay, application/dtmf"))
		return
	}
	sipleg.Respond(tx, req, 200, "OK")
	inj := c.inj.Load()
	ev := c.currentPlan().SIPDTMF // the trunk may renumber it mid-call
	if s != sideTrunk || inj == nil || ev.PT == 0 {
		c.log.Info("dtmf info not relayed", "digit", string(digit))
		return
	}
	inj.Play(byte(strings.IndexByte(dtmf.Events, digit)), dur, ev.PT, ev.Clock)
}
