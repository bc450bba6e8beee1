package signaling

import (
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// inboundKeys is the SDES answer to a trunk's encrypted offer on a call
// from the trunk: nil means plain RTP.
type inboundKeys struct {
	proto  string           // the offer's proto, echoed in the answer
	line   string           // our a=crypto line: our key, the trunk's tag (never logged)
	suite  string           // agreed crypto suite
	config media.SRTPConfig // keys for the RTP leg
}

// inboundSecurity applies the trunk's SRTP policy to its offer. It returns
// the keys to answer with (nil for plain RTP), or the text of a 488's
// Warning when the offer cannot be answered under the policy. DTLS-SRTP
// (UDP/TLS/RTP/SAVP) is not negotiated on calls from trunks.
func inboundSecurity(route *config.Trunk, offer sdp.Audio, lateOffer bool) (*inboundKeys, string) {
	policy := route.SRTP
	proto := strings.ToUpper(strings.TrimSpace(offer.Proto))
	if lateOffer {
		if policy == SRTPRequired || policy == SRTPDTLS {
			return nil, "SRTP on calls from trunks needs an offer in the INVITE"
		}
		return nil, ""
	}
	switch proto {
	case "", "RTP/AVP", "RTP/SAVP":
	default:
		if strings.Contains(proto, "TLS") {
			return nil, "DTLS-SRTP on calls from trunks is not supported"
		}
		return nil, "unsupported media protocol " + offer.Proto
	}
	savp := proto == "RTP/SAVP"
	switch policy {
	case SRTPOff:
		if savp {
			return nil, "SRTP is off for this trunk"
		}
		return nil, "" // a=crypto in an RTP/AVP offer may be ignored (RFC 4568 §5.1.3)
	case SRTPOptional, SRTPRequired:
	case SRTPDTLS:
		return nil, "DTLS-SRTP on calls from trunks is not supported"
	default:
		return nil, "unknown SRTP policy"
	}
	if len(offer.Crypto) == 0 {
		if policy == SRTPRequired {
			return nil, "SRTP is required for this trunk"
		}
		if savp {
			return nil, "RTP/SAVP offer without a=crypto"
		}
		return nil, ""
	}
	if !sdesAllowed(route) {
		return nil, "SDES keys over an unencrypted SIP transport are refused"
	}
	for _, line := range offer.Crypto {
		theirs, err := sdp.ParseCrypto(line)
		if err != nil || len(theirs.Keys) == 0 || len(theirs.SessionParams) > 0 {
			continue
		}
		prof, err := media.SRTPProfile(theirs.Suite)
		if err != nil {
			continue
		}
		mine, err := sdp.GenerateCrypto(theirs.Tag, theirs.Suite)
		if err != nil {
			continue
		}
		if proto == "" {
			proto = "RTP/AVP"
		}
		return &inboundKeys{
			proto: proto,
			line:  mine.String(),
			suite: theirs.Suite,
			config: media.SRTPConfig{
				Profile:   prof,
				LocalKey:  mine.Keys[0].KeySalt,
				RemoteKey: theirs.Keys[0].KeySalt,
				RemoteMKI: theirs.Keys[0].MKIBytes(),
			},
		}, ""
	}
	if policy == SRTPRequired || savp {
		return nil, "no supported a=crypto suite offered"
	}
	return nil, "" // optional and RTP/AVP: answer in the clear
}

// startInboundSRTP keys the call's RTP leg for an inbound call, before it
// has a remote address.
func (c *Call) startInboundSRTP(k *inboundKeys, fail func(int, string, string, ...sip.Header)) bool {
	c.sec.policy = c.route.SRTP
	if k == nil {
		return true
	}
	cfg := k.config
	if err := c.trunk.rtp.StartSRTP(&cfg); err != nil {
		c.log.Warn("srtp setup failed", "err", err)
		fail(488, "Not Acceptable Here", endSRTPRequired)
		return false
	}
	c.sec.suite = k.suite
	c.sec.keyed.Store(true)
	c.log.Info("sip leg encrypted", "srtp", "sdes", "suite", k.suite)
	return true
}

// answerSecurity fills in the proto and a=crypto of the answer to the trunk.
func (k *inboundKeys) answerSecurity(o *sdp.Offer) {
	if k == nil {
		return
	}
	o.Proto = k.proto
	o.Crypto = []string{k.line}
}
