package signaling

import (
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/callapi"
	"github.com/mediarelay/mediarelay/signaling/dtmf"
	"github.com/mediarelay/mediarelay/signaling/join"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// The names this package's tests used before signaling/mediaplan,
// signaling/dtmf, signaling/callapi, signaling/join, pkg/sdp's text edits
// and the end causes (pkg/cdr) moved out of it, so that the tests read as
// they did.

const (
	ModeAuto             = mediaplan.ModeAuto
	ModePassthrough      = mediaplan.ModePassthrough
	ModeTranscode        = mediaplan.ModeTranscode
	ModeE2E              = mediaplan.ModeE2E
	E2EFallbackTerminate = mediaplan.E2EFallbackTerminate
	SRTPOff              = mediaplan.SRTPOff
	SRTPOptional         = mediaplan.SRTPOptional
	SRTPRequired         = mediaplan.SRTPRequired
	SRTPDTLS             = mediaplan.SRTPDTLS

	endNormalBrowser = cdr.CauseNormalBrowser
	endNormalTrunk   = cdr.CauseNormalTrunk
	endBusy          = cdr.CauseBusy
	endCancelled     = cdr.CauseCancelled
	endUnreachable   = cdr.CauseUnreachable
	endMediaTimeout  = cdr.CauseMediaTimeout
	endSessionTime   = cdr.CauseSessionExpired
	endAdminHangup   = cdr.CauseAdminHangup
	endE2ENoDTLS     = cdr.CauseE2ENoDTLS
	endTransferred   = cdr.CauseTransferred

	directionTransfer = join.Direction
)

var (
	sipCodecs   = mediaplan.SIPCodecs
	dtmf8k      = mediaplan.DTMF8k
	validCallID = callapi.ValidID
	sdpVersion  = sdp.Version
	rewriteSDP  = sdp.Rewrite
	setCodecs   = sdp.SetCodecs
	// containsFold was the tests' own copy of mediaplan.HasCodec.
	containsFold = mediaplan.HasCodec
)

func normDir(a sdp.Audio) string { return a.EffectiveDirection() }

type (
	dtmfToInfo = dtmf.ToInfo
	CallView   = callapi.CallView
)

// ngSession was the relay's ng session of a call-id; the tests read its
// call. The sessions are signaling/ngnode's now.
func (r *Relay) ngSession(callID string) struct{ c *Call } {
	return struct{ c *Call }{r.ngNode.Session(callID).Call().(*ngCall).c}
}
