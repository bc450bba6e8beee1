package sipleg

import (
	"net/url"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// What a REFER (RFC 3515) on a dialog asks for: the target of Refer-To
// and, for an attended transfer, the Replaces (RFC 3891) it carries.

// Replaces is a Replaces header value (RFC 3891): the dialog an INVITE
// takes the place of. The tags are as the recipient of the INVITE sees the
// dialog: ToTag is its own tag, FromTag the other side's.
type Replaces struct {
	CallID, ToTag, FromTag string
	EarlyOnly              bool
}

// ParseReplaces reads "call-id;to-tag=x;from-tag=y[;early-only]".
func ParseReplaces(v string) (Replaces, bool) {
	parts := strings.Split(strings.TrimSpace(v), ";")
	rep := Replaces{CallID: strings.TrimSpace(parts[0])}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "to-tag":
			rep.ToTag = strings.TrimSpace(val)
		case "from-tag":
			rep.FromTag = strings.TrimSpace(val)
		case "early-only":
			rep.EarlyOnly = true
		}
	}
	if rep.CallID == "" || rep.ToTag == "" || rep.FromTag == "" || strings.ContainsAny(rep.CallID, " \t\r\n") {
		return Replaces{}, false
	}
	return rep, true
}

// String is the header value.
func (rep Replaces) String() string {
	s := rep.CallID + ";to-tag=" + rep.ToTag + ";from-tag=" + rep.FromTag
	if rep.EarlyOnly {
		s += ";early-only"
	}
	return s
}

// Matches says whether dialogID (as sipgo makes it: Call-ID, local tag,
// remote tag) is the dialog rep names. Either order of the tags is
// accepted: a REFER's Replaces is written for the transfer target, which
// may see the dialog from either end.
func (rep Replaces) Matches(dialogID string) bool {
	return dialogID == sip.DialogIDMake(rep.CallID, rep.ToTag, rep.FromTag) ||
		dialogID == sip.DialogIDMake(rep.CallID, rep.FromTag, rep.ToTag)
}

// ReferReplaces extracts the Replaces header embedded in a Refer-To URI
// ("sip:bob@host?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2"). present
// is false when there is none; ok is false when there is one that does
// not parse.
func ReferReplaces(target sip.Uri) (rep Replaces, present, ok bool) {
	if target.Headers == nil {
		return Replaces{}, false, false
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
		return Replaces{}, false, false
	}
	v, err := url.PathUnescape(raw)
	if err != nil {
		return Replaces{}, true, false
	}
	rep, ok = ParseReplaces(v)
	return rep, true, ok
}

// ReferTarget reads a REFER's Refer-To, answering the REFER (400) when it
// is missing or unusable.
func ReferTarget(req *sip.Request, tx sip.ServerTransaction) (sip.Uri, bool) {
	h := req.GetHeader("Refer-To")
	if h == nil {
		Respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 mediarelay "Refer-To is required"`))
		return sip.Uri{}, false
	}
	var target sip.Uri
	params := sip.NewParams()
	if _, err := sip.ParseAddressValue(h.Value(), &target, &params); err != nil || target.User == "" {
		Respond(tx, req, 400, "Bad Request")
		return sip.Uri{}, false
	}
	return target, true
}
