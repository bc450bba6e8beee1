package signaling

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// SRTP policies of a trunk (config.Trunk.SRTP).
const (
	SRTPOff      = "off"
	SRTPOptional = "optional" // offer RTP/AVP with a=crypto; take either answer
	SRTPRequired = "required" // offer RTP/SAVP; no crypto in the answer fails the call
	SRTPDTLS     = "dtls"     // UDP/TLS/RTP/SAVP, a=fingerprint, a=setup
)

// End causes of encrypted legs.
const (
	endSRTPAuth     = "srtp_auth_failed" // the trunk's SRTP stopped authenticating
	endSRTPRequired = "srtp_required"    // the trunk would not encrypt, or not acceptably
	endDTLSFailed   = "dtls_failed"      // handshake or fingerprint check failed
)

// sdesSuites are the crypto suites offered, one a=crypto line each, in
// order of preference: the widely deployed one first.
var sdesSuites = []string{
	media.SuiteAESCM128SHA1_80,
	media.SuiteAEADAES128GCM,
	media.SuiteAEADAES256GCM,
	media.SuiteAESCM128SHA1_32,
}

var (
	// errSDESInsecure refuses to put SDES keys in an SDP that travels in
	// the clear.
	errSDESInsecure = errors.New("SDES keys would travel over an unencrypted SIP transport; use transport tls, srtp dtls, or allow_sdes_over_insecure_transport")
	// errSRTPRefused: the trunk answered without (usable) encryption.
	errSRTPRefused = errors.New("trunk did not accept SRTP")
	// errSRTPBadAnswer: the answer's crypto does not match the offer.
	errSRTPBadAnswer = errors.New("trunk's SRTP answer does not match the offer")
)

// secureSignalling says whether SIP to the trunk is encrypted.
func secureSignalling(t *config.Trunk) bool {
	u := t.URI()
	return strings.EqualFold(t.Transport, "tls") || u.IsEncrypted()
}

// sdesAllowed says whether SDES keys may be sent to or taken from t.
func sdesAllowed(t *config.Trunk) bool {
	return secureSignalling(t) || t.AllowSDESOverInsecureTransport
}

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
	case SRTPOff:
		return nil
	case SRTPOptional, SRTPRequired:
		if !sdesAllowed(c.route) {
			return errSDESInsecure
		}
		for i, suite := range sdesSuites {
			cr, err := sdp.GenerateCrypto(i+1, suite)
			if err != nil {
				return err
			}
			s.offered = append(s.offered, cr)
			o.Crypto = append(o.Crypto, cr.String())
		}
		if s.policy == SRTPRequired {
			o.Proto = "RTP/SAVP"
		}
		return nil
	case SRTPDTLS:
		return c.dtlsOffer(o)
	}
	return fmt.Errorf("unknown srtp policy %q", s.policy)
}

// secureAnswer keys the RTP leg from the trunk's answer, before it gets a
// remote address. It returns an error wrapping errSRTPRefused or
// errSRTPBadAnswer when the answer does not satisfy the policy.
func (c *Call) secureAnswer(ans sdp.Audio) error {
	s := &c.sec
	switch s.policy {
	case SRTPDTLS:
		return c.dtlsAnswer(ans)
	case SRTPOff, "":
		if len(ans.Crypto) > 0 || strings.Contains(strings.ToUpper(ans.Proto), "SAVP") {
			return fmt.Errorf("%w: an encrypted answer to a plain offer", errSRTPBadAnswer)
		}
		return nil
	}
	if !sdesAllowed(c.route) {
		return errSDESInsecure
	}
	cfg, suite, err := pickSDES(s.offered, ans.Crypto)
	if err != nil {
		return err
	}
	if cfg == nil {
		if s.policy == SRTPRequired || strings.Contains(strings.ToUpper(ans.Proto), "SAVP") {
			return fmt.Errorf("%w: no a=crypto in the answer", errSRTPRefused)
		}
		c.log.Info("trunk answered without SRTP; media in the clear (srtp: optional)")
		return nil
	}
	if err := c.trunk.rtp.StartSRTP(cfg); err != nil {
		return err
	}
	s.suite = suite
	s.keyed.Store(true)
	c.log.Info("sip leg encrypted", "srtp", "sdes", "suite", suite)
	return nil
}

// pickSDES matches the answer's a=crypto lines against what was offered: the
// answer must echo one of our tags with the same suite (RFC 4568 §7.1.3).
// No crypto in the answer gives a nil config and no error.
func pickSDES(offered []sdp.Crypto, answer []string) (*media.SRTPConfig, string, error) {
	if len(answer) == 0 {
		return nil, "", nil
	}
	if len(offered) == 0 {
		return nil, "", fmt.Errorf("%w: crypto answered to an offer without it", errSRTPBadAnswer)
	}
	for _, line := range answer {
		ac, err := sdp.ParseCrypto(line)
		if err != nil {
			// The parse error names no key material, but keep it short.
			return nil, "", fmt.Errorf("%w: unparsable a=crypto", errSRTPBadAnswer)
		}
		for _, oc := range offered {
			if oc.Tag != ac.Tag {
				continue
			}
			if oc.Suite != ac.Suite {
				return nil, "", fmt.Errorf("%w: tag %d answered with suite %s, offered %s", errSRTPBadAnswer, ac.Tag, ac.Suite, oc.Suite)
			}
			if len(ac.SessionParams) > 0 {
				return nil, "", fmt.Errorf("%w: session parameters %q are not supported", errSRTPBadAnswer, strings.Join(ac.SessionParams, " "))
			}
			prof, err := media.SRTPProfile(ac.Suite)
			if err != nil {
				return nil, "", fmt.Errorf("%w: %v", errSRTPBadAnswer, err)
			}
			if len(ac.Keys) == 0 {
				return nil, "", fmt.Errorf("%w: no key", errSRTPBadAnswer)
			}
			return &media.SRTPConfig{
				Profile:   prof,
				LocalKey:  oc.Keys[0].KeySalt,
				LocalMKI:  oc.Keys[0].MKIBytes(),
				RemoteKey: ac.Keys[0].KeySalt,
				RemoteMKI: ac.Keys[0].MKIBytes(),
			}, ac.Suite, nil
		}
	}
	return nil, "", fmt.Errorf("%w: no a=crypto tag of the answer was offered", errSRTPBadAnswer)
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
	case errors.Is(err, errSRTPRefused), errors.Is(err, errSRTPBadAnswer), errors.Is(err, errSDESInsecure):
		return endSRTPRequired
	case errors.Is(err, errDTLS):
		return endDTLSFailed
	case errors.Is(err, errE2ENoDTLS):
		return endE2ENoDTLS
	}
	return endNoCodec
}
