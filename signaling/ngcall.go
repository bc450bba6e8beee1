package signaling

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/logsafe"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/ng"
	"github.com/mediarelay/mediarelay/signaling/ngnode"
)

// DirectionNG is the CDR direction of a call set up over the ng protocol;
// its trunk column is "ng:" and the proxy's address.
const DirectionNG = ngnode.Direction

// NGAddr is the address of the ng control socket (after Ready), or the
// zero AddrPort when ng.listen is not set.
func (r *Relay) NGAddr() netip.AddrPort { return r.ngNode.Addr() }

// ngHost is what the relay does for its ng node (ngnode.Host).
type ngHost struct{ r *Relay }

func (h ngHost) Draining() bool { return h.r.Draining() }

func (h ngHost) Metrics() *metrics.Relay { return h.r.m.Relay }

// NewCall is the call behind an ng session: its legs are named by the
// proxy's Call-ID, its caller by the offerer's tag.
func (h ngHost) NewCall(s *ngnode.Session, route *config.Trunk) ngnode.Call {
	r := h.r
	c := r.newCall(route, DirectionNG)
	c.browser.SetCallID(s.CallID())
	c.trunk.SetCallID(s.CallID())
	c.from, c.start, c.ngs = s.FromTag(), s.Created(), s
	// Ids come from SIP clients through the proxy: logged bounded.
	c.log = r.log.With("call", c.id, "ng_call_id", logsafe.Truncate(s.CallID(), 64), "proxy", s.Proxy().String())
	c.srtp = r.srtpFor(route, c.log, &c.sec)
	return &ngCall{c: c}
}

// ngCall is a Call as an ng session drives it (ngnode.Call): the offerer's
// SDP sets it up as a B2BUA call sets up the leg it came on, and the
// answerer's completes it.
type ngCall struct {
	c    *Call
	keys *mediaplan.InboundKeys // SDES keys taken from a plain SRTP offer
}

// Offer admits the call and sets up the leg the offer came on; a failure
// is counted and ends the call, as a refused INVITE does.
func (n *ngCall) Offer(s *ngnode.Session, req *ng.Request, offer sdp.Audio) (string, error) {
	c, r := n.c, n.c.r
	r.calls.Add(c.id, c, c.wsSource)
	var failure error
	fail := func(code int, reason, cause string, _ ...sip.Header) {
		failure = fmt.Errorf("%d %s", code, reason)
		if code == 503 {
			failure = ngnode.ErrNoPorts // openRTPLeg: the port range is exhausted
		}
		r.m.CountSetupFailure(code)
		c.hangup(cause, code, reason)
	}
	var out string
	var err error
	if s.WebOffer() {
		out, err = n.offerToPlain(offer, req, fail)
	} else {
		out, err = n.offerToWeb(offer, fail)
	}
	if err == nil && failure != nil {
		err = failure
	}
	if err != nil && failure == nil {
		r.m.CountSetupFailure(488)
		c.hangup(setupCause(err), 488, "")
	}
	return out, err
}

// offerToPlain: a browser's offer becomes a plain RTP (or SDES-SRTP) offer
// on the relay's RTP port, as the B2BUA offers a trunk.
func (n *ngCall) offerToPlain(offer sdp.Audio, req *ng.Request, fail func(int, string, string, ...sip.Header)) (string, error) {
	c := n.c
	offered, err := mediaplan.TrunkOffer(c.route.MediaMode, c.route.Codecs, offer)
	if err != nil {
		return "", err
	}
	c.browserOffer = req.SDP
	c.offered = offered
	if !c.openRTPLeg(fail) {
		return "", nil
	}
	o := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddr(),
		Port:      int(c.trunk.RTP().LocalAddr().Port()),
		Codecs:    offered,
		Direction: offer.Direction,
	}
	if err := c.srtp.Offer(&o); err != nil {
		return "", err
	}
	if len(req.Flags.SDES) > 0 {
		if err := c.srtp.KeepSuites(&o, req.Flags.AllowsSDES); err != nil {
			return "", err
		}
	}
	if tp := req.Flags.TransportProtocol; tp != "" {
		// RTP/AVPF and RTP/SAVPF as asked; the keys decide the S.
		if strings.HasSuffix(tp, "F") && !strings.HasSuffix(o.Proto, "F") {
			o.Proto = strings.TrimSuffix(firstNonEmpty(o.Proto, "RTP/AVP"), "F") + "F"
		}
	}
	if ng.Has(req.Flags.RTCPMux, "offer") || ng.Has(req.Flags.RTCPMux, "require") {
		o.Extra = append(o.Extra, "rtcp-mux")
	}
	return string(o.Marshal()), nil
}

// offerToWeb: a plain offer (its address as the node took it) becomes a
// WebRTC offer (ICE-lite candidate on the shared WebRTC port, DTLS
// fingerprint), as an inbound call rings a browser.
func (n *ngCall) offerToWeb(offer sdp.Audio, fail func(int, string, string, ...sip.Header)) (string, error) {
	c := n.c
	if err := usableConnection(offer); err != nil {
		return "", err
	}
	keys, refuse := mediaplan.InboundSecurity(c.route, offer, false)
	if refuse != "" {
		return "", errors.New(refuse)
	}
	codecs := mediaplan.BrowserCodecs(c.route.MediaMode, c.route.Codecs, offer)
	if len(codecs) == 0 {
		return "", mediaplan.ErrNoCommonCodec
	}
	c.trunkOffer = offer
	n.keys = keys
	if !c.openRTPLeg(fail) || !c.startInboundSRTP(keys, fail) {
		return "", nil
	}
	web, out, err := c.r.webrtc.Offer(codecs)
	if err != nil {
		return "", err
	}
	c.media.SetWeb(web)
	return out, nil
}

// Answer sets up the media for the answerer's SDP: a trunk's answer on a
// browser's offer (setupMedia), a browser's on a plain one
// (startInboundMedia).
func (n *ngCall) Answer(s *ngnode.Session, req *ng.Request, ans sdp.Audio, first bool) (string, error) {
	c := n.c
	var err error
	if s.WebOffer() {
		err = c.setupMedia(ans)
	} else {
		err = c.startInboundMedia(req.SDP, n.keys)
	}
	if err != nil {
		if first {
			c.r.m.CountSetupFailure(488)
			go c.hangup(setupCause(err), 488, "")
		}
		return "", err
	}
	return c.answerSDP, nil
}

// Answered marks the call answered by the party tagged to. The call API,
// the watcher and an ng delete may read the call meanwhile: to is set
// under the lock of the relay's calls and the answer time atomically, as they read
// them.
func (n *ngCall) Answered(to string) {
	c := n.c
	c.r.calls.Lock()
	c.to = to
	c.r.calls.Unlock()
	now := time.Now()
	c.answered.Store(&now)
	c.watch()
	c.beginCDR()
	c.log.Info("ng call answered", "to_tag", logsafe.Truncate(to, 64))
}

// FollowAddress moves the plain side's media to the address of a
// repeated answer.
func (n *ngCall) FollowAddress(ans sdp.Audio) { n.c.trunk.SetRemote(ans) }

// Hangup ends the call with cause.
func (n *ngCall) Hangup(cause string) { n.c.hangup(cause, 0, "") }

// Ended is closed when the call has ended.
func (n *ngCall) Ended() <-chan struct{} { return n.c.ended }

// Log is the call's logger.
func (n *ngCall) Log() *slog.Logger { return n.c.log }

// Stats are the call's legs' counts and ports, for query and delete.
func (n *ngCall) Stats() ngnode.Stats {
	c := n.c
	var st ngnode.Stats
	if rtp := c.sipLeg(); rtp != nil {
		st.Plain = rtp.Stats()
		st.PlainPort = int(rtp.LocalAddr().Port())
	}
	if c.media.Web() != nil {
		if web := c.media.Web(); web != nil {
			st.Web = web.Stats()
		}
	}
	if c.r.webrtc != nil {
		_, st.WebPort = splitHostPort(c.r.webrtc.LocalAddr().String())
	}
	st.SRTP = c.sec.Outcome().Suite != ""
	return st
}
