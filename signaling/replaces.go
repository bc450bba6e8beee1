package signaling

import (
	"net/url"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// replaces is a Replaces header value (RFC 3891): the dialog an INVITE
// takes the place of. The tags are as the recipient of the INVITE sees the
// dialog: to-tag is its own tag, from-tag the other side's.
type replaces struct {
	callID, toTag, fromTag string
	earlyOnly              bool
}

// parseReplaces reads "call-id;to-tag=x;from-tag=y[;early-only]".
func parseReplaces(v string) (replaces, bool) {
	parts := strings.Split(strings.TrimSpace(v), ";")
	rep := replaces{callID: strings.TrimSpace(parts[0])}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "to-tag":
			rep.toTag = strings.TrimSpace(val)
		case "from-tag":
			rep.fromTag = strings.TrimSpace(val)
		case "early-only":
			rep.earlyOnly = true
		}
	}
	if rep.callID == "" || rep.toTag == "" || rep.fromTag == "" || strings.ContainsAny(rep.callID, " \t\r\n") {
		return replaces{}, false
	}
	return rep, true
}

// String is the header value.
func (rep replaces) String() string {
	s := rep.callID + ";to-tag=" + rep.toTag + ";from-tag=" + rep.fromTag
	if rep.earlyOnly {
		s += ";early-only"
	}
	return s
}

// matches says whether dialogID (as sipgo makes it: Call-ID, local tag,
// remote tag) is the dialog rep names. Either order of the tags is
// accepted: a REFER's Replaces is written for the transfer target, which
// may see the dialog from either end.
func (rep replaces) matches(dialogID string) bool {
	return dialogID == sip.DialogIDMake(rep.callID, rep.toTag, rep.fromTag) ||
		dialogID == sip.DialogIDMake(rep.callID, rep.fromTag, rep.toTag)
}

// referReplaces extracts the Replaces header embedded in a Refer-To URI
// ("sip:bob@host?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2"). It returns
// ok=false when there is none, and a zero value with ok=true when there is
// one that does not parse.
func referReplaces(target sip.Uri) (rep replaces, present, ok bool) {
	if target.Headers == nil {
		return replaces{}, false, false
	}
	raw, has := target.Headers.Get("Replaces")
	if !has {
		for _, kv := range target.Headers {
			if strings.EqualFold(kv.K, "Replaces") {
				raw, has = kv.V, true
			}
		}
	}
	if !has {
		return replaces{}, false, false
	}
	v, err := url.PathUnescape(raw)
	if err != nil {
		return replaces{}, true, false
	}
	rep, ok = parseReplaces(v)
	return rep, true, ok
}
