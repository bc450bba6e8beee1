package signaling

import (
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/signaling/dtmf"
	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// A call's DTMF (signaling/dtmf does the packets, signaling/callmedia puts
// them in the call's media): INFO from the trunk is played to the browser
// by the injector on the trunk → browser direction; towards a trunk with
// dtmf: info, the browser's telephone-events become INFO requests on the
// trunk's dialog.

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
	if s != sideTrunk || !c.media.PlayDigit(digit, dur) {
		c.log.Info("dtmf info not relayed", "digit", string(digit))
	}
}
