package signaling

import (
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// End-to-end calls (media_mode: e2e; mediaplan says what they offer and
// settle): the relay anchors ICE and latching but the DTLS handshake and
// the SRTP keys stay with the two endpoints, and DTLS records and SRTP
// cross the legs as they are (media.NewOpaqueStage).

// e2eWarning is the Warning header of a call refused with
// mediaplan.ErrE2ENoDTLS.
func e2eWarning() sip.Header {
	return sip.NewHeader("Warning", `399 mediarelay "end-to-end media needs DTLS-SRTP at the far end"`)
}

// setupE2E is setupMedia for an end-to-end call. When the far end answers
// without DTLS-SRTP it returns mediaplan.ErrE2ENoDTLS, or, on a trunk whose
// e2e_fallback is terminate, reports fallback so that the call goes on
// terminated (passthrough).
func (c *Call) setupE2E(answer sdp.Audio) (fallback bool, err error) {
	far, ok, err := mediaplan.FarDTLS(answer)
	if err != nil {
		return false, fmt.Errorf("far end's DTLS parameters: %w", err)
	}
	if !ok {
		plain := len(answer.Crypto) == 0 && !strings.Contains(strings.ToUpper(answer.Proto), "SAVP")
		if plain && c.route.E2EFallback == mediaplan.E2EFallbackTerminate {
			c.log.Info("far end answered plain RTP; terminating DTLS-SRTP instead (e2e_fallback: terminate)", "proto", answer.Proto)
			return true, nil
		}
		return false, fmt.Errorf("%w: it answered %s", mediaplan.ErrE2ENoDTLS, answer.Proto)
	}
	if far.Setup == "" {
		far.Setup = sdp.SetupActive // RFC 4145: an answer without a=setup is active
	}
	if far.Setup != sdp.SetupActive && far.Setup != sdp.SetupPassive {
		return false, fmt.Errorf("far end answered a=setup:%s", far.Setup)
	}
	plan, codecs, err := mediaplan.E2EPlan(answer, c.offered)
	if err != nil {
		return false, err
	}
	web, answerSDP, err := c.r.webrtc.AnswerE2E(c.browserOffer, codecs, media.E2EPeer{Fingerprint: far.Fingerprint, Setup: far.Setup, SSRC: far.SSRC})
	if err != nil {
		return false, err
	}
	c.log.Debug("webrtc answer", "sdp", answerSDP)
	c.media.SetWeb(web)
	c.answerSDP = answerSDP
	c.trunk.RTP().SetE2E() // before it has a remote, and so before it reads
	c.trunk.RTP().SetRemoteICE(far.ICEUfrag)
	c.trunk.SetRemote(answer)
	c.mediaUp = true
	c.media.StartOpaque(plan)
	c.r.m.TranscodedCalls.WithLabelValues(plan.Mode, c.trunkName()).Inc()
	c.log.Info("media negotiated", "mode", plan.Mode, "codec", plan.SIPCodec.Name, "far_setup", far.Setup, "far_ice", far.ICEUfrag != "")
	return false, nil
}

// userE2E reports whether the configured user wants end-to-end media on
// calls into its browsers (users[].media_mode: e2e).
func (r *Relay) userE2E(user string) bool {
	for _, u := range r.cfg.Users {
		if u.Name == user {
			return strings.EqualFold(u.MediaMode, mediaplan.ModeE2E)
		}
	}
	return false
}

// inboundE2E decides how a trunk's offer into a browser of user is
// handled when the trunk or the user asks for end-to-end media. e2e is
// false when neither does, or when the offer has no DTLS-SRTP and the
// trunk allows terminating; refuse is the Warning text of a 488.
func (r *Relay) inboundE2E(route *config.Trunk, user string, offer sdp.Audio, lateOffer bool) (far mediaplan.DTLSIdentity, e2e bool, refuse string) {
	if route.MediaMode != mediaplan.ModeE2E && !r.userE2E(user) {
		return far, false, ""
	}
	if !lateOffer {
		id, ok, err := mediaplan.FarDTLS(offer)
		if err != nil {
			return far, false, "malformed DTLS parameters"
		}
		if ok {
			return id, true, ""
		}
	}
	if route.E2EFallback == mediaplan.E2EFallbackTerminate {
		return far, false, ""
	}
	return far, false, mediaplan.ErrE2ENoDTLS.Error()
}

// startInboundE2E is startInboundMedia for an end-to-end call: the
// browser's answer settles the codec, and the trunk is answered with the
// browser's fingerprint and setup.
func (c *Call) startInboundE2E(browserAnswer string) error {
	if err := c.media.Web().SetAnswer(browserAnswer); err != nil {
		return err
	}
	fp, setup, err := media.RemoteDTLS(browserAnswer)
	if err != nil {
		return fmt.Errorf("browser answer: %w", err)
	}
	plan, codecs, err := mediaplan.E2EPlan(c.media.Web().Audio, c.trunkOffer.Codecs)
	if err != nil {
		return err
	}
	ans := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddrFor(c.trunkOffer.Addr),
		Port:      int(c.trunk.RTP().LocalAddr().Port()),
		Codecs:    codecs,
		Ptime:     c.trunkOffer.Ptime,
		Proto:     c.trunkOffer.Proto,
		Extra:     []string{"fingerprint:" + fp, "setup:" + setup},
	}
	if c.trunkOffer.RTCPMux {
		ans.Extra = append(ans.Extra, "rtcp-mux")
	}
	if far, ok, _ := mediaplan.FarDTLS(c.trunkOffer); ok && far.ICEUfrag != "" {
		// The trunk speaks ICE: answer it as ICE-lite on the RTP port.
		ice, err := c.trunk.RTP().EnableICE(ans.Addr)
		if err != nil {
			return err
		}
		c.trunk.RTP().SetRemoteICE(far.ICEUfrag)
		ans.Extra = append(ans.Extra, ice...)
	}
	c.answerSDP = string(ans.Marshal())
	c.trunk.SetSDP(c.answerSDP)
	c.trunk.RTP().SetE2E() // before it has a remote, and so before it reads
	c.trunk.SetRemote(c.trunkOffer)
	c.mediaUp = true
	c.media.StartOpaque(plan)
	c.r.m.TranscodedCalls.WithLabelValues(plan.Mode, c.trunkName()).Inc()
	c.log.Info("media negotiated", "mode", plan.Mode, "codec", plan.SIPCodec.Name, "browser_setup", setup)
	return nil
}
