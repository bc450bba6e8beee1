package signaling

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// End-to-end calls (media_mode: e2e): the relay anchors ICE and latching
// but the DTLS handshake and the SRTP keys stay with the two endpoints.
// Each side's a=fingerprint and a=setup reach the other unchanged, codecs
// keep the payload types of the offer (the relay cannot rewrite an
// authenticated RTP header), and DTLS records and SRTP cross the legs as
// they are (media.NewOpaqueStage).

// ModeE2E is the media mode of a call whose DTLS-SRTP is end to end.
const ModeE2E = "e2e"

// E2E fallback policies of a trunk (config e2e_fallback).
const (
	E2EFallbackRefuse    = "refuse"
	E2EFallbackTerminate = "terminate"
)

// errE2ENoDTLS is a far end that answered an end-to-end offer without
// DTLS-SRTP (plain RTP or SDES) on a trunk that does not allow falling back.
var errE2ENoDTLS = errors.New("end-to-end media needs DTLS-SRTP at the far end")

// e2eWarning is the Warning header of a call refused with errE2ENoDTLS.
func e2eWarning() sip.Header {
	return sip.NewHeader("Warning", `399 mediarelay "end-to-end media needs DTLS-SRTP at the far end"`)
}

// endE2ENoDTLS is the CDR end cause of such a call.
const endE2ENoDTLS = "e2e_no_dtls"

// e2eOffer lists what an end-to-end call offers the far end: the
// browser's codecs that the trunk allows, in the trunk's order, with the
// browser's payload types and format parameters, and the browser's
// telephone-event at those codecs' clocks.
func e2eOffer(trunkCodecs []string, browser sdp.Audio) ([]sdp.Codec, error) {
	var out []sdp.Codec
	clocks := map[uint32]bool{}
	for _, name := range trunkCodecs {
		if !browserCan(browser, name) {
			continue
		}
		c, _ := browser.Find(name)
		out = append(out, c)
		clocks[c.Clock] = true
	}
	if len(out) == 0 {
		return nil, errNoCommonCodec
	}
	for _, c := range browser.Codecs {
		if c.Is("telephone-event") && clocks[c.Clock] {
			out = append(out, c)
		}
	}
	return out, nil
}

// dtlsIdentity is one side's DTLS parameters from its SDP: what an
// end-to-end call passes on.
type dtlsIdentity struct {
	fingerprint string // "sha-256 AB:CD:..."
	setup       string
	ssrc        []string // a=ssrc values: the stream reaches the other side with its SSRC
	iceUfrag    string   // a=ice-ufrag of a far end that speaks ICE
}

// e2eOfferSDP turns the relay's offer to the far end into an end-to-end
// one: DTLS-SRTP with the browser's fingerprint and setup, rtcp-mux (the
// browser's SRTCP shares its RTP flow), and ICE-lite lines for a far end
// that speaks ICE (media.RTPLeg.EnableICE; others ignore them).
func e2eOfferSDP(o *sdp.Offer, browser dtlsIdentity, ice []string) {
	o.Proto = "UDP/TLS/RTP/SAVP"
	o.Extra = append(o.Extra, "fingerprint:"+browser.fingerprint, "setup:"+browser.setup, "rtcp-mux")
	o.Extra = append(o.Extra, ice...)
}

// farDTLS reads the far end's DTLS parameters from its answer; ok is false
// when it cannot do DTLS-SRTP (no TLS protocol or no fingerprint).
func farDTLS(ans sdp.Audio) (id dtlsIdentity, ok bool, err error) {
	if !strings.Contains(strings.ToUpper(ans.Proto), "TLS") {
		return id, false, nil
	}
	for _, a := range ans.Attrs {
		switch a.Key {
		case "fingerprint":
			if h, v, err := sdp.ParseFingerprint(a.Value); err == nil && id.fingerprint == "" {
				id.fingerprint = h + " " + v
			}
		case "setup":
			if id.setup, err = sdp.ParseSetup(a.Value); err != nil {
				return id, false, err
			}
		case "ice-ufrag":
			id.iceUfrag = a.Value
		case "ssrc":
			if validSSRCAttr(a.Value) {
				id.ssrc = append(id.ssrc, a.Value)
			}
		}
	}
	if id.fingerprint == "" {
		return id, false, nil
	}
	return id, true, nil
}

// e2ePlan settles an end-to-end call from the far end's answer: its first
// codec that was offered, with the offered payload type.
func e2ePlan(answer sdp.Audio, offered []sdp.Codec) (mediaPlan, []sdp.Codec, error) {
	var p mediaPlan
	var codecs []sdp.Codec
	for _, c := range answer.Codecs {
		var match *sdp.Codec
		for i := range offered {
			if offered[i].Is(c.Name) && offered[i].PT == c.PT && offered[i].Clock == c.Clock {
				match = &offered[i]
				break
			}
		}
		if match == nil {
			continue // a renumbered or unoffered codec cannot cross unchanged
		}
		codecs = append(codecs, c)
		switch {
		case c.Is("telephone-event"):
			if p.SIPDTMF.PT == 0 {
				p.SIPDTMF = c
			}
		case p.BrowserCodec == "":
			p.SIPCodec, p.BrowserCodec = c, c.Name
		}
	}
	if p.BrowserCodec == "" {
		return p, nil, fmt.Errorf("far end answered no offered codec with its payload type: %w", errNoCommonCodec)
	}
	p.Mode = ModeE2E
	return p, codecs, nil
}

// setupE2E is setupMedia for an end-to-end call. When the far end answers
// without DTLS-SRTP it returns errE2ENoDTLS, or, on a trunk whose
// e2e_fallback is terminate, reports fallback so that the call goes on
// terminated (passthrough).
func (c *Call) setupE2E(answer sdp.Audio) (fallback bool, err error) {
	far, ok, err := farDTLS(answer)
	if err != nil {
		return false, fmt.Errorf("far end's DTLS parameters: %w", err)
	}
	if !ok {
		plain := len(answer.Crypto) == 0 && !strings.Contains(strings.ToUpper(answer.Proto), "SAVP")
		if plain && c.route.E2EFallback == E2EFallbackTerminate {
			c.log.Info("far end answered plain RTP; terminating DTLS-SRTP instead (e2e_fallback: terminate)", "proto", answer.Proto)
			return true, nil
		}
		return false, fmt.Errorf("%w: it answered %s", errE2ENoDTLS, answer.Proto)
	}
	if far.setup == "" {
		far.setup = sdp.SetupActive // RFC 4145: an answer without a=setup is active
	}
	if far.setup != sdp.SetupActive && far.setup != sdp.SetupPassive {
		return false, fmt.Errorf("far end answered a=setup:%s", far.setup)
	}
	plan, codecs, err := e2ePlan(answer, c.offered)
	if err != nil {
		return false, err
	}
	web, answerSDP, err := c.r.webrtc.AnswerE2E(c.browserOffer, codecs, media.E2EPeer{Fingerprint: far.fingerprint, Setup: far.setup, SSRC: far.ssrc})
	if err != nil {
		return false, err
	}
	c.log.Debug("webrtc answer", "sdp", answerSDP)
	c.setWeb(web)
	c.answerSDP = answerSDP
	c.trunk.rtp.SetE2E() // before it has a remote, and so before it reads
	c.trunk.rtp.SetRemoteICE(far.iceUfrag)
	c.trunk.setRemote(answer)
	c.mediaUp = true
	c.startOpaque(plan)
	c.r.m.TranscodedCalls.WithLabelValues(plan.Mode, c.trunkName()).Inc()
	c.log.Info("media negotiated", "mode", plan.Mode, "codec", plan.SIPCodec.Name, "far_setup", far.setup, "far_ice", far.iceUfrag != "")
	return false, nil
}

// startOpaque joins the legs of an end-to-end call: each direction writes
// what it reads unchanged.
func (c *Call) startOpaque(plan mediaPlan) {
	m := &activeMedia{
		plan:      plan,
		toSIP:     media.NewPath(media.NewOpaqueStage(c.sipLeg(), c.r.countDrop)),
		toWeb:     media.NewPath(media.NewOpaqueStage(c.webRW(), c.r.countDrop)),
		toWebDone: make(chan struct{}),
	}
	c.active.Store(m)
	c.run(func() error { return m.toSIP.Run(c.webRW()) })
	sip := c.sipLeg()
	c.run(func() error {
		defer close(m.toWebDone)
		return m.toWeb.Run(sip) // no DTMF injection: the relay cannot write into the stream
	})
}

// WriteOpaque sends an end-to-end packet to the current browser leg.
func (w *webIO) WriteOpaque(b []byte) error { return w.cur.Load().WriteOpaque(b) }

// validSSRCAttr accepts an a=ssrc value worth passing to a browser: a
// number, then an attribute of printable text (no line breaks to smuggle
// other SDP lines in).
func validSSRCAttr(v string) bool {
	id, rest, _ := strings.Cut(v, " ")
	if _, err := strconv.ParseUint(id, 10, 32); err != nil || len(v) > 256 {
		return false
	}
	return !strings.ContainsAny(rest, "\r\n\x00")
}

// userE2E reports whether the configured user wants end-to-end media on
// calls into its browsers (users[].media_mode: e2e).
func (r *Relay) userE2E(user string) bool {
	for _, u := range r.cfg.Users {
		if u.Name == user {
			return strings.EqualFold(u.MediaMode, ModeE2E)
		}
	}
	return false
}

// inboundE2E decides how a trunk's offer into a browser of user is
// handled when the trunk or the user asks for end-to-end media. e2e is
// false when neither does, or when the offer has no DTLS-SRTP and the
// trunk allows terminating; refuse is the Warning text of a 488.
func (r *Relay) inboundE2E(route *config.Trunk, user string, offer sdp.Audio, lateOffer bool) (far dtlsIdentity, e2e bool, refuse string) {
	if route.MediaMode != ModeE2E && !r.userE2E(user) {
		return far, false, ""
	}
	if !lateOffer {
		id, ok, err := farDTLS(offer)
		if err != nil {
			return far, false, "malformed DTLS parameters"
		}
		if ok {
			return id, true, ""
		}
	}
	if route.E2EFallback == E2EFallbackTerminate {
		return far, false, ""
	}
	return far, false, errE2ENoDTLS.Error()
}

// e2eBrowserCodecs lists what an end-to-end call offers the browser: the
// trunk's offered codecs that its configuration allows and a browser
// takes, with the trunk's payload types, and its telephone-event at those
// clocks.
func e2eBrowserCodecs(allowed []string, offer sdp.Audio) []sdp.Codec {
	var out []sdp.Codec
	clocks := map[uint32]bool{}
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") || !hasFold(allowed, c.Name) {
			continue
		}
		if _, err := webrtcCodec(c.Name); err != nil {
			continue
		}
		out = append(out, c)
		clocks[c.Clock] = true
	}
	if len(out) == 0 {
		return nil
	}
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") && clocks[c.Clock] {
			out = append(out, c)
		}
	}
	return out
}

// startInboundE2E is startInboundMedia for an end-to-end call: the
// browser's answer settles the codec, and the trunk is answered with the
// browser's fingerprint and setup.
func (c *Call) startInboundE2E(browserAnswer string) error {
	if err := c.web.SetAnswer(browserAnswer); err != nil {
		return err
	}
	fp, setup, err := media.RemoteDTLS(browserAnswer)
	if err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	plan, codecs, err := e2ePlan(c.web.Audio, c.trunkOffer.Codecs)
	if err != nil {
		return err
	}
	ans := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddrFor(c.trunkOffer.Addr),
		Port:      int(c.trunk.rtp.LocalAddr().Port()),
		Codecs:    codecs,
		Ptime:     c.trunkOffer.Ptime,
		Proto:     c.trunkOffer.Proto,
		Extra:     []string{"fingerprint:" + fp, "setup:" + setup},
	}
	if c.trunkOffer.RTCPMux {
		ans.Extra = append(ans.Extra, "rtcp-mux")
	}
	if far, ok, _ := farDTLS(c.trunkOffer); ok && far.iceUfrag != "" {
		// The trunk speaks ICE: answer it as ICE-lite on the RTP port.
		ice, err := c.trunk.rtp.EnableICE(ans.Addr)
		if err != nil {
			return err
		}
		c.trunk.rtp.SetRemoteICE(far.iceUfrag)
		ans.Extra = append(ans.Extra, ice...)
	}
	c.answerSDP = string(ans.Marshal())
	c.trunk.sdp = c.answerSDP
	c.trunk.rtp.SetE2E() // before it has a remote, and so before it reads
	c.trunk.setRemote(c.trunkOffer)
	c.mediaUp = true
	c.startOpaque(plan)
	c.r.m.TranscodedCalls.WithLabelValues(plan.Mode, c.trunkName()).Inc()
	c.log.Info("media negotiated", "mode", plan.Mode, "codec", plan.SIPCodec.Name, "browser_setup", setup)
	return nil
}

// e2eFollow checks a trunk's mid-call offer on an end-to-end call: a hold,
// a refresh or a move keeps the opaque forwarding as it is, but another
// codec or payload type could not reach the browser unchanged (the relay
// cannot rewrite authenticated headers, nor re-offer the browser in its
// place), so it gets 488 and the call goes on.
func e2eFollow(cur mediaPlan, offer sdp.Audio) error {
	for _, c := range offer.Codecs {
		if c.Is(cur.SIPCodec.Name) && c.PT == cur.SIPCodec.PT && c.Clock == cur.SIPCodec.Clock {
			return nil
		}
	}
	return fmt.Errorf("an end-to-end call keeps codec %s/%d: %w", cur.SIPCodec.Name, cur.SIPCodec.PT, errNoCommonCodec)
}

// e2eSettledSetup is the browser's a=setup on an end-to-end call to a
// trunk once the trunk's answer (res) took its role: the other one.
func e2eSettledSetup(res *sip.Response) string {
	if res == nil {
		return ""
	}
	_, setup, err := media.RemoteDTLS(string(res.Body()))
	switch {
	case err != nil:
		return ""
	case setup == sdp.SetupPassive:
		return sdp.SetupActive
	}
	return sdp.SetupPassive // active, or absent (RFC 4145: active)
}
