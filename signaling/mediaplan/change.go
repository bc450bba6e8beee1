package mediaplan

import (
	"fmt"
	"strings"

	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/transcode"
)

// A trunk may change codec in the middle of a call (a re-INVITE or UPDATE
// whose offer drops the codec negotiated at setup, or renumbers it or
// telephone-event). The relay follows without renegotiating the browser
// leg: the browser keeps its codec and Replan picks how the relay joins
// it to the trunk's new one.

// Joining is how a plan joins the browser's leg to the trunk's.
type Joining int

// The ways of joining two legs.
const (
	JoinNone      Joining = iota
	JoinForward           // the same codec on both legs: payload types mapped
	JoinRecode            // G.711 μ-law on one leg, A-law on the other: byte by byte
	JoinTranscode         // Opus on the browser leg: decoded and re-encoded
)

func isG711(name string) bool {
	return strings.EqualFold(name, "PCMU") || strings.EqualFold(name, "PCMA")
}

// JoinFor says how the relay can join a browser leg on codec browser to a
// SIP leg on codec sip, and whether mode allows it.
func JoinFor(mode, browser, sip string) Joining {
	switch {
	case strings.EqualFold(browser, sip):
		if mode != ModeTranscode {
			return JoinForward
		}
	case mode == ModePassthrough:
	case strings.EqualFold(browser, "opus") && Transcodable(sip):
		return JoinTranscode
	case isG711(browser) && isG711(sip):
		return JoinRecode
	}
	return JoinNone
}

// Replan settles the media for a trunk's offer during the call. The
// browser's codec stays. The trunk's leg keeps its codec while the offer
// has it (taking the offer's payload types); otherwise it takes the
// browser's codec if offered (passthrough, the cheapest), else the first
// codec of the offer, in the trunk's order and among the trunk's
// configured codecs (allowed), that the relay can join to the browser's in
// mode:
//   - browser Opus: PCMU, PCMA or G722 through a new Opus bridge
//     (auto, transcode);
//   - browser PCMU, trunk PCMA or the reverse: a byte-by-byte G.711
//     conversion (auto, transcode);
//   - the browser's own codec: passthrough (auto, passthrough).
//
// Anything else is not supported and gets an error (the trunk hears 488,
// the call goes on as it was): a codec other than the browser's in mode
// passthrough; Opus on the trunk leg in mode transcode; G.722 against
// G.711 or the reverse (the relay transcodes only to and from Opus, and
// moving the browser to Opus would need a WebRTC renegotiation); codecs
// the relay does not speak (G.729 ...).
func Replan(mode string, allowed []string, cur Plan, offer sdp.Audio) (Plan, error) {
	next := cur
	found := false
	if c, ok := offer.Find(cur.SIPCodec.Name); ok && c.Clock == cur.SIPCodec.Clock {
		next.SIPCodec, found = c, true
	}
	pick := func(ok func(sdp.Codec) bool) {
		for _, c := range offer.Codecs {
			if found || c.Is("telephone-event") || !HasCodec(allowed, c.Name) || !ok(c) {
				continue
			}
			if j := JoinFor(mode, cur.BrowserCodec, c.Name); j != JoinNone {
				next.SIPCodec, found = c, true
				next.Mode = ModeTranscode
				if j == JoinForward {
					next.Mode = ModePassthrough
				}
			}
		}
	}
	pick(func(c sdp.Codec) bool { return c.Is(cur.BrowserCodec) })
	pick(func(sdp.Codec) bool { return true })
	if !found {
		var names []string
		for _, c := range offer.Codecs {
			names = append(names, c.Name)
		}
		return cur, fmt.Errorf("trunk offers %s, none of which joins the browser's %s in mode %s: %w",
			strings.Join(names, " "), cur.BrowserCodec, mode, ErrNoCommonCodec)
	}
	next.SIPDTMF = sdp.Codec{}
	if ev, ok := offer.DTMF(next.SIPCodec.Clock); ok {
		next.SIPDTMF = ev
	} else if ev, ok := offer.DTMF(8000); ok {
		next.SIPDTMF = ev
	}
	return next, nil
}

// SamePlumbing says whether a and b forward the same way: the same codecs
// and payload types. fmtp and the like may differ between a trunk's SDPs
// without it meaning anything to the relay.
func SamePlumbing(a, b Plan) bool {
	same := func(x, y sdp.Codec) bool { return x.Is(y.Name) && x.PT == y.PT && x.Clock == y.Clock }
	return a.Mode == b.Mode && a.BrowserCodec == b.BrowserCodec && same(a.SIPCodec, b.SIPCodec) && same(a.SIPDTMF, b.SIPDTMF)
}

// TrunkCodecs is what the relay's SDP towards the trunk carries for p:
// its codec and telephone-event.
func (p Plan) TrunkCodecs() []sdp.Codec {
	codecs := []sdp.Codec{p.SIPCodec}
	if p.SIPDTMF.PT != 0 {
		codecs = append(codecs, p.SIPDTMF)
	}
	return codecs
}

// Joinable says whether two trunk legs with codecs a and b can be joined
// (a transfer's join): the same codec, or G.711's two laws, which a table
// converts.
func Joinable(a, b sdp.Codec) bool {
	if a.Is(b.Name) {
		return a.Clock == b.Clock
	}
	_, ok := transcode.G711Recode(a.Name, b.Name)
	return ok
}
