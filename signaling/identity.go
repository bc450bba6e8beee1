package signaling

import (
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// formatNumber writes a caller number as trunk t wants it. With
// number_format e164: "+..." stays, "00..." becomes "+...", a national
// number with a leading 0 gets +country_code instead of the 0, other digit
// strings get + (and the country code unless they start with it). Anything
// that is not a phone number (a user name) is left alone.
func formatNumber(t *config.Trunk, n string) string {
	if t == nil || !strings.EqualFold(t.NumberFormat, "e164") {
		return n
	}
	d := config.NormalizeNumber(n)
	if d == "" {
		return n
	}
	cc := t.CountryCode
	switch {
	case strings.HasPrefix(d, "+"):
		return d
	case strings.HasPrefix(d, "00"):
		return "+" + d[2:]
	case strings.HasPrefix(d, "0"):
		return "+" + cc + d[1:]
	case strings.HasPrefix(d, cc) && len(d) > 10:
		return "+" + d
	}
	return "+" + cc + d
}

// outboundIdentity builds the From of an INVITE to trunk route for a
// browser's INVITE req from user, with P-Asserted-Identity and the
// headers the trunk is configured to receive. Nothing else of the
// browser's request reaches the trunk.
func (r *Relay) outboundIdentity(route *config.Trunk, req *sip.Request, user string) (*sip.FromHeader, []sip.Header) {
	number := formatNumber(route, firstNonEmpty(route.CallerID, user))
	display := ""
	if f := req.From(); f != nil && route.CallerID == "" {
		display = f.DisplayName
	}
	from := &sip.FromHeader{DisplayName: display, Address: sip.Uri{User: number, Host: r.host}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	var hdrs []sip.Header
	if route.AssertIdentity {
		pai := (&sip.ContactHeader{DisplayName: display, Address: sip.Uri{User: number, Host: r.host}}).Value()
		hdrs = append(hdrs, sip.NewHeader("P-Asserted-Identity", pai))
	}
	return from, append(hdrs, passHeaders(route, req)...)
}

// passHeaders copies the headers route lets through from req.
func passHeaders(route *config.Trunk, req *sip.Request) []sip.Header {
	var out []sip.Header
	for _, name := range route.PassHeaders {
		for _, h := range req.GetHeaders(strings.TrimSpace(name)) {
			out = append(out, sip.NewHeader(h.Name(), h.Value()))
		}
	}
	return out
}
