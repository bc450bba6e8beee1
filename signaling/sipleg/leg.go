// Package sipleg owns one SIP dialog of a relayed call and what concerns
// it alone: the dialog itself (placed by the relay or by the peer), the RTP
// leg on a trunk's dialog, the relay's SDP on it and its next version, the
// direction the peer last asked for, offer/answer state (an offer of the
// relay's outstanding, glare, an answer due in the ACK), the RFC 4028
// session timer, and what is sent on that dialog alone: re-INVITEs and
// their answers, session refreshes, DTMF INFO, a REFER's NOTIFYs. It also
// reads what a REFER on a dialog asks for (Refer-To, Replaces), and keeps
// the hold state of the two legs of a call or join (Hold).
//
// A Leg knows nothing of the relay, the call or the join that holds it:
// the holder gives it what it decides (the SDP to send, the direction,
// the codec) and what ends it when its session timer runs out.
package sipleg

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Leg is one SIP dialog of a relayed call and what the relay keeps for
// it: the dialog, the RTP leg (nil on a browser's dialog, whose media is
// the WebRTC leg), the relay's SDP and its version, the direction the peer
// last asked for, the offer/answer state (an offer of the relay's
// outstanding; an answer due in the ACK), and the RFC 4028 session timer.
// What is sent on one dialog alone is built and sent here: the next SDP,
// re-INVITEs and their answers, session refreshes, DTMF INFO. A
// browser↔trunk call has two (browser and trunk); a join of two trunk legs
// has two trunk legs. A transfer moves a leg from a call to a join, or
// swaps one in, without converting it.
//
// The SDP, direction and codec state is guarded by the lock of the call
// or join holding the leg; the session timer and offer state guard
// themselves.
type Leg struct {
	dialog
	route *config.Trunk // the trunk on the far end; nil on a browser's dialog
	party string        // the far end's number, for a join's CDR
	rtp   *media.RTPLeg
	// codec and dtmf are what a join forwards on the leg (PT 0: no
	// telephone-event); a call keeps them in its media plan.
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
	sec   Security // what the leg's set-up negotiated
}

// Security is the SRTP state a leg was set up with, for the call that
// takes it over.
type Security struct {
	Policy, Suite string
	Keyed         bool
}

// New is a leg towards route (nil: a browser) with no dialog yet.
func New(route *config.Trunk) *Leg { return &Leg{route: route} }

// SetClient makes d, a dialog the relay placed, the leg's dialog.
func (l *Leg) SetClient(d *sipgo.DialogClientSession) {
	l.dialog = dialog{dcs: d, id: d.ID, callID: d.InviteRequest.CallID().Value()}
}

// SetServer makes d, a dialog the peer placed, the leg's dialog.
func (l *Leg) SetServer(d *sipgo.DialogServerSession) {
	l.dialog = dialog{dss: d, id: d.ID, callID: d.InviteRequest.CallID().Value()}
}

// Confirm takes the id of a dialog the relay placed once the peer's
// answer has confirmed it.
func (l *Leg) Confirm() {
	if l.dcs != nil {
		l.id = l.dcs.ID
	}
}

// SetCallID names a leg that has no dialog of the relay's (a call a SIP
// proxy set up over ng: the proxy's Call-ID names both legs), for logs
// and CDRs.
func (l *Leg) SetCallID(id string) { l.callID = id }

// Abandon forgets the session of a dialog the peer placed whose INVITE
// got a final failure: it never existed, so no BYE goes there. Its ids
// stay for the CDR.
func (l *Leg) Abandon() { l.dss = nil }

// Route is the trunk on the far end; nil on a browser's dialog.
func (l *Leg) Route() *config.Trunk { return l.route }

// RTP is the leg's media leg; nil on a browser's dialog.
func (l *Leg) RTP() *media.RTPLeg { return l.rtp }

// SetRTP gives the leg its media leg.
func (l *Leg) SetRTP(rtp *media.RTPLeg) { l.rtp = rtp }

// Party is the number at the far end.
func (l *Leg) Party() string { return l.party }

// Codecs are the codec and telephone-event (PT 0: none) the leg carries
// in a join.
func (l *Leg) Codecs() (codec, dtmf sdp.Codec) { return l.codec, l.dtmf }

// SetPeer records the number at the far end and the codec and
// telephone-event (PT 0: none) the leg carries: what a join forwards.
func (l *Leg) SetPeer(party string, codec, dtmf sdp.Codec) {
	l.party, l.codec, l.dtmf = party, codec, dtmf
}

// MoveCodec makes codec (and dtmf, PT 0: none) the leg's, after the peer
// moved to it: later SDP on the dialog lists only them.
func (l *Leg) MoveCodec(codec, dtmf sdp.Codec) {
	l.codec, l.dtmf = codec, dtmf
	codecs := []sdp.Codec{codec}
	if dtmf.PT != 0 {
		codecs = append(codecs, dtmf)
	}
	l.sdp = sdp.SetCodecs(l.sdp, codecs)
}

// Security is the SRTP state the leg was set up with.
func (l *Leg) Security() Security { return l.sec }

// SetSecurity records the SRTP state the leg was set up with.
func (l *Leg) SetSecurity(s Security) { l.sec = s }

// Drop ends a leg that never made it into a call or join.
func (l *Leg) Drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.Bye(ctx)
	_ = l.rtp.Close()
}

// SetRemote points the RTP leg at the media address of the peer's SDP; an
// unspecified address (on hold) or a rejected stream keeps what it had.
func (l *Leg) SetRemote(a sdp.Audio) {
	if l.rtp == nil || !a.Addr.IsValid() || a.Addr.IsUnspecified() || a.Port == 0 {
		return
	}
	var rtcp netip.AddrPort
	if a.RTCPPort != 0 {
		rtcp = netip.AddrPortFrom(a.Addr, uint16(a.RTCPPort))
	}
	l.rtp.SetRemote(netip.AddrPortFrom(a.Addr, uint16(a.Port)), rtcp)
}

// SetDir records the direction the peer asked for and reports whether it
// changed (an absent direction is sendrecv).
func (l *Leg) SetDir(dir string) (changed bool) {
	changed = l.dir != dir && !(l.dir == "" && dir == "sendrecv")
	l.dir = dir
	return changed
}

// AskedDir is the direction the peer last asked for on the leg, sendrecv
// until it asked for one: what the relay offers the other party of the
// call or join.
func (l *Leg) AskedDir() string {
	if l.dir == "" {
		return "sendrecv"
	}
	return l.dir
}

// SetSDP makes body the relay's SDP on the dialog, the base of later ones.
func (l *Leg) SetSDP(body string) { l.sdp = body }

// NextSDP is the relay's SDP on the leg with direction dir and a new
// version, rewritten from the leg's last one: setup, if not empty,
// replaces a=setup; codecs, if not nil, replace the audio formats (a
// call's codec may have changed since its first SDP listed all it
// offered).
func (l *Leg) NextSDP(dir, setup string, codecs []sdp.Codec) string {
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

// ErrEnded is an offer not sent because the call or join ended.
var ErrEnded = errors.New("call ended")

// Offering says an offer of the relay's is out on the dialog: an offer
// from the peer now is glare (491).
func (l *Leg) Offering() bool { return l.offering.Load() }

// SendOffer sends a re-INVITE with the SDP that body makes and waits for
// its answer (ACKing a 2xx). Offers of the relay's go out one at a time
// per dialog; body runs once this one's turn has come, after Offering
// says so, so a peer's offer from then on is glare. A 2xx's SDP moves the
// RTP leg's remote. It returns ErrEnded, sending nothing, once ended is
// closed.
func (l *Leg) SendOffer(ended <-chan struct{}, body func() string) (*sip.Response, error) {
	l.offerMu.Lock()
	defer l.offerMu.Unlock()
	select {
	case <-ended:
		return nil, ErrEnded
	default:
	}
	l.offering.Store(true)
	defer l.offering.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := l.Request(ctx, sip.INVITE, []byte(body()), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil || !res.IsSuccess() {
		return res, err
	}
	if _, a, err := sdp.Parse(res.Body()); err == nil && len(res.Body()) > 0 {
		l.SetRemote(a)
	}
	return res, nil
}

// AnswerOffer answers the peer's re-INVITE or UPDATE on the leg with 200
// and body (none for a refresh), the session timer the request asks for,
// and the relay's Contact.
func (l *Leg) AnswerOffer(req *sip.Request, tx sip.ServerTransaction, body string, contact sip.Header) error {
	res := OKWithSDP(req, body)
	l.AcceptSessionTimer(req, res)
	res.AppendHeader(contact)
	return tx.Respond(res)
}

// SendInfo sends one digit on the leg as application/dtmf-relay INFO and
// waits for the answer.
func (l *Leg) SendInfo(digit byte, dur time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body := fmt.Sprintf("Signal=%c\r\nDuration=%d\r\n", digit, dur.Milliseconds())
	_, err := l.Request(ctx, sip.INFO, []byte(body), sip.NewHeader("Content-Type", "application/dtmf-relay"))
	return err
}

// ExpectAckAnswer records that the peer's INVITE had no SDP: the relay
// offers in its 200, and the peer's ACK answers (AckAnswer).
func (l *Leg) ExpectAckAnswer() { l.lateOffer = true }

// AckAnswer is the SDP answer in the peer's ACK to the offer the relay
// made in its 200 because the peer's INVITE had none (ExpectAckAnswer);
// only the first ACK with a body counts.
func (l *Leg) AckAnswer(req *sip.Request) ([]byte, bool) {
	if !l.lateOffer || len(req.Body()) == 0 || !l.lateDone.CompareAndSwap(false, true) {
		return nil, false
	}
	return req.Body(), true
}
