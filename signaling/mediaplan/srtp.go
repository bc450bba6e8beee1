package mediaplan

import (
	"errors"
	"fmt"
	"strings"

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

// sdesSuites are the crypto suites offered, one a=crypto line each, in
// order of preference: the widely deployed one first.
var sdesSuites = []string{
	media.SuiteAESCM128SHA1_80,
	media.SuiteAEADAES128GCM,
	media.SuiteAEADAES256GCM,
	media.SuiteAESCM128SHA1_32,
}

var (
	// ErrSDESInsecure refuses to put SDES keys in an SDP that travels in
	// the clear.
	ErrSDESInsecure = errors.New("SDES keys would travel over an unencrypted SIP transport; use transport tls, srtp dtls, or allow_sdes_over_insecure_transport")
	// ErrSRTPRefused: the trunk answered without (usable) encryption.
	ErrSRTPRefused = errors.New("trunk did not accept SRTP")
	// ErrSRTPBadAnswer: the answer's crypto does not match the offer.
	ErrSRTPBadAnswer = errors.New("trunk's SRTP answer does not match the offer")
)

// SecureSignalling says whether SIP to the trunk is encrypted.
func SecureSignalling(t *config.Trunk) bool {
	u := t.URI()
	return strings.EqualFold(t.Transport, "tls") || u.IsEncrypted()
}

// SDESAllowed says whether SDES keys may be sent to or taken from t.
func SDESAllowed(t *config.Trunk) bool {
	return SecureSignalling(t) || t.AllowSDESOverInsecureTransport
}

// SDESOffer makes the a=crypto lines of an offer, one per suite in order
// of preference, with fresh keys from crypto/rand.
func SDESOffer() ([]sdp.Crypto, error) {
	var out []sdp.Crypto
	for i, suite := range sdesSuites {
		cr, err := sdp.GenerateCrypto(i+1, suite)
		if err != nil {
			return nil, err
		}
		out = append(out, cr)
	}
	return out, nil
}

// PickSDES matches the answer's a=crypto lines against what was offered: the
// answer must echo one of our tags with the same suite (RFC 4568 §7.1.3).
// No crypto in the answer gives a nil config and no error.
func PickSDES(offered []sdp.Crypto, answer []string) (*media.SRTPConfig, string, error) {
	if len(answer) == 0 {
		return nil, "", nil
	}
	if len(offered) == 0 {
		return nil, "", fmt.Errorf("%w: crypto answered to an offer without it", ErrSRTPBadAnswer)
	}
	for _, line := range answer {
		ac, err := sdp.ParseCrypto(line)
		if err != nil {
			// The parse error names no key material, but keep it short.
			return nil, "", fmt.Errorf("%w: unparsable a=crypto", ErrSRTPBadAnswer)
		}
		for _, oc := range offered {
			if oc.Tag != ac.Tag {
				continue
			}
			if oc.Suite != ac.Suite {
				return nil, "", fmt.Errorf("%w: tag %d answered with suite %s, offered %s", ErrSRTPBadAnswer, ac.Tag, ac.Suite, oc.Suite)
			}
			if len(ac.SessionParams) > 0 {
				return nil, "", fmt.Errorf("%w: session parameters %q are not supported", ErrSRTPBadAnswer, strings.Join(ac.SessionParams, " "))
			}
			prof, err := media.SRTPProfile(ac.Suite)
			if err != nil {
				return nil, "", fmt.Errorf("%w: %v", ErrSRTPBadAnswer, err)
			}
			if len(ac.Keys) == 0 {
				return nil, "", fmt.Errorf("%w: no key", ErrSRTPBadAnswer)
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
	return nil, "", fmt.Errorf("%w: no a=crypto tag of the answer was offered", ErrSRTPBadAnswer)
}

// InboundKeys is the SDES answer to a trunk's encrypted offer on a call
// from the trunk: nil means plain RTP.
type InboundKeys struct {
	Proto  string           // the offer's proto, echoed in the answer
	Line   string           // our a=crypto line: our key, the trunk's tag (never logged)
	Suite  string           // agreed crypto suite
	Config media.SRTPConfig // keys for the RTP leg
}

// InboundSecurity applies the trunk's SRTP policy to its offer. It returns
// the keys to answer with (nil for plain RTP), or the text of a 488's
// Warning when the offer cannot be answered under the policy. DTLS-SRTP
// (UDP/TLS/RTP/SAVP) is not negotiated on calls from trunks.
func InboundSecurity(route *config.Trunk, offer sdp.Audio, lateOffer bool) (*InboundKeys, string) {
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
	if !SDESAllowed(route) {
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
		return &InboundKeys{
			Proto: proto,
			Line:  mine.String(),
			Suite: theirs.Suite,
			Config: media.SRTPConfig{
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

// Answer fills in the proto and a=crypto of the answer to the trunk; a
// nil k leaves it plain.
func (k *InboundKeys) Answer(o *sdp.Offer) {
	if k == nil {
		return
	}
	o.Proto = k.Proto
	o.Crypto = []string{k.Line}
}
