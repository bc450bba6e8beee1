package signaling

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// callSecurity is the encryption state of a call's SIP leg.
type callSecurity struct {
	policy  string
	offered []sdp.Crypto // our a=crypto lines, keys included (never logged)
	dtls    *dtlsOffer   // for policy dtls
	suite   string       // what was agreed; "" for plain RTP

	keyed     atomic.Bool   // the SIP leg's SRTP is keyed
	authFails atomic.Uint64 // SRTP/SRTCP authentication failures
	lastFails uint64        // watch's view at its previous tick
	badTicks  int           // consecutive ticks with failures and no good packet
	lastIn    uint64
}

// sdesOfferFor fills in the offer's protocol and crypto for the trunk's
// policy, with fresh keys from crypto/rand.
func (c *Call) secureOffer(o *sdp.Offer) error {
	s := &c.sec
	s.policy = c.route.SRTP
	switch s.policy {
	case mediaplan.SRTPOff:
		return nil
	case mediaplan.SRTPOptional, mediaplan.SRTPRequired:
		if !mediaplan.SDESAllowed(c.route) {
			return mediaplan.ErrSDESInsecure
		}
		offered, err := mediaplan.SDESOffer()
		if err != nil {
			return err
		}
		for _, cr := range offered {
			o.Crypto = append(o.Crypto, cr.String())
		}
		s.offered = append(s.offered, offered...)
		if s.policy == mediaplan.SRTPRequired {
			o.Proto = "RTP/SAVP"
		}
		return nil
	case mediaplan.SRTPDTLS:
		return c.dtlsOffer(o)
	}
	return fmt.Errorf("unknown srtp policy %q", s.policy)
}

// secureAnswer keys the RTP leg from the trunk's answer, before it gets a
// remote address. It returns an error wrapping mediaplan.ErrSRTPRefused or
// mediaplan.ErrSRTPBadAnswer when the answer does not satisfy the policy.
func (c *Call) secureAnswer(ans sdp.Audio) error {
	s := &c.sec
	switch s.policy {
	case mediaplan.SRTPDTLS:
		return c.dtlsAnswer(ans)
	case mediaplan.SRTPOff, "":
		if len(ans.Crypto) > 0 || strings.Contains(strings.ToUpper(ans.Proto), "SAVP") {
			return fmt.Errorf("%w: an encrypted answer to a plain offer", mediaplan.ErrSRTPBadAnswer)
		}
		return nil
	}
	if !mediaplan.SDESAllowed(c.route) {
		return mediaplan.ErrSDESInsecure
	}
	cfg, suite, err := mediaplan.PickSDES(s.offered, ans.Crypto)
	if err != nil {
		return err
	}
	if cfg == nil {
		if s.policy == mediaplan.SRTPRequired || strings.Contains(strings.ToUpper(ans.Proto), "SAVP") {
			return fmt.Errorf("%w: no a=crypto in the answer", mediaplan.ErrSRTPRefused)
		}
		c.log.Info("trunk answered without SRTP; media in the clear (srtp: optional)")
		return nil
	}
	if err := c.trunk.RTP().StartSRTP(cfg); err != nil {
		return err
	}
	s.suite = suite
	s.keyed.Store(true)
	c.log.Info("sip leg encrypted", "srtp", "sdes", "suite", suite)
	return nil
}

// startInboundSRTP keys the call's RTP leg for an inbound call, before it
// has a remote address.
func (c *Call) startInboundSRTP(k *mediaplan.InboundKeys, fail func(int, string, string, ...sip.Header)) bool {
	c.sec.policy = c.route.SRTP
	if k == nil {
		return true
	}
	cfg := k.Config
	if err := c.trunk.RTP().StartSRTP(&cfg); err != nil {
		c.log.Warn("srtp setup failed", "err", err)
		fail(488, "Not Acceptable Here", cdr.CauseSRTPRequired)
		return false
	}
	c.sec.suite = k.Suite
	c.sec.keyed.Store(true)
	c.log.Info("sip leg encrypted", "srtp", "sdes", "suite", k.Suite)
	return true
}

// onRTPDrop counts a dropped packet of the call's SIP leg.
func (c *Call) onRTPDrop(reason string) {
	c.r.countDrop(reason)
	if reason == media.DropSRTPAuth {
		c.sec.authFails.Add(1)
	}
}

// srtpAuthLimit is how many consecutive one-second ticks may see SRTP
// authentication failures and no authentic packet before the call ends.
const srtpAuthLimit = 3

// authFailing is watch's per-tick check of the call's current RTP leg: a
// stream that keeps failing authentication (wrong key, or an attacker)
// while nothing authentic arrives. It lives with the counters it reads,
// which only watch's goroutine updates between ticks.
func (s *callSecurity) authFailing(leg *media.RTPLeg) bool {
	if leg == nil || !s.keyed.Load() {
		return false
	}
	fails := s.authFails.Load()
	in := leg.Stats().PacketsIn
	if fails > s.lastFails && in == s.lastIn {
		s.badTicks++
	} else {
		s.badTicks = 0
	}
	s.lastFails, s.lastIn = fails, in
	return s.badTicks >= srtpAuthLimit
}

// setupCause maps an error from setting up the trunk's media to a CDR cause.
func setupCause(err error) string {
	switch {
	case errors.Is(err, mediaplan.ErrSRTPRefused), errors.Is(err, mediaplan.ErrSRTPBadAnswer), errors.Is(err, mediaplan.ErrSDESInsecure):
		return cdr.CauseSRTPRequired
	case errors.Is(err, errDTLS):
		return cdr.CauseDTLSFailed
	case errors.Is(err, mediaplan.ErrE2ENoDTLS):
		return cdr.CauseE2ENoDTLS
	}
	return cdr.CauseNoCodec
}
