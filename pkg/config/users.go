package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// validateUsers checks users, the registrar settings and DIDs.
func (c Config) validateUsers(v *validator) {
	if strings.ContainsAny(c.SIP.Realm, "\"\\\r\n") {
		v.add("sip.realm", "%q may not hold quotes, backslashes or line breaks", c.SIP.Realm)
	}
	v.positive("sip.register_max_expires", c.SIP.RegisterMaxExpires)
	if c.SIP.RegisterRate < 1 {
		v.add("sip.register_rate", "%d must be at least 1", c.SIP.RegisterRate)
	}
	if c.SIP.RegisterBurst < 1 {
		v.add("sip.register_burst", "%d must be at least 1", c.SIP.RegisterBurst)
	}
	if c.SIP.AuthFailures < 1 {
		v.add("sip.auth_failures", "%d must be at least 1", c.SIP.AuthFailures)
	}
	v.positive("sip.auth_lockout", c.SIP.AuthLockout)
	if len(c.SIP.DigestAlgorithms) == 0 {
		v.add("sip.digest_algorithms", "is empty: list SHA-256, MD5 or both")
	}
	for _, a := range c.SIP.DigestAlgorithms {
		v.oneOf("sip.digest_algorithms", a, "SHA-256", "MD5")
	}
	names := map[string]int{}
	dids := map[string]string{}
	for i, u := range c.Users {
		p := fmt.Sprintf("users[%d].", i)
		if m := strings.ToLower(strings.TrimSpace(u.MediaMode)); m != "" {
			v.oneOf(p+"media_mode", m, "e2e")
		}
		switch {
		case u.Name == "":
			v.add(p+"name", "is required")
		case strings.ContainsAny(u.Name, ":@;\"\\ \t\r\n"):
			v.add(p+"name", "%q may not hold ':', '@', ';', quotes or spaces", u.Name)
		default:
			if first, dup := names[u.Name]; dup {
				v.add(p+"name", "%q is already the name of users[%d]", u.Name, first)
			}
			names[u.Name] = i
		}
		if u.Password == "" && u.HA1MD5 == "" && u.HA1SHA256 == "" {
			v.add(p+"password", "is required (or ha1_md5 / ha1_sha256)")
		}
		if u.HA1MD5 != "" && !isHex(u.HA1MD5, 32) {
			v.add(p+"ha1_md5", "is not 32 hex digits")
		}
		if u.HA1SHA256 != "" && !isHex(u.HA1SHA256, 64) {
			v.add(p+"ha1_sha256", "is not 64 hex digits")
		}
		for _, d := range u.DIDs {
			n := NormalizeNumber(d)
			if n == "" {
				v.add(p+"dids", "%q is not a phone number", d)
				continue
			}
			if other, dup := dids[n]; dup {
				v.add(p+"dids", "%q already rings user %q", d, other)
			}
			dids[n] = u.Name
		}
	}
}

// validateTrunkInbound checks the keys that govern calls from a trunk.
func validateTrunkInbound(v *validator, p string, t Trunk) {
	for _, s := range t.Sources {
		if _, err := ParseSource(s); err != nil {
			v.add(p+"sources", "%q is not an IP address or CIDR prefix", s)
		}
	}
	if (t.InboundUsername == "") != (t.InboundPassword == "") {
		v.add(p+"inbound_username", "inbound_username and inbound_password go together")
	}
	if t.Register && t.Username == "" && t.RegisterUser == "" {
		v.add(p+"register", "needs username (or register_user) and password")
	}
	if t.DTMF != "" {
		v.oneOf(p+"dtmf", t.DTMF, "rfc4733", "info")
	}
	if t.NumberFormat != "" {
		v.oneOf(p+"number_format", t.NumberFormat, "e164")
	}
	if strings.EqualFold(t.NumberFormat, "e164") && (t.CountryCode == "" || strings.Trim(t.CountryCode, "0123456789") != "" || len(t.CountryCode) > 3) {
		v.add(p+"country_code", "%q is not a country calling code (1-3 digits), which number_format e164 needs", t.CountryCode)
	}
	if t.CallerID != "" && NormalizeNumber(t.CallerID) == "" {
		v.add(p+"caller_id", "%q is not a phone number", t.CallerID)
	}
	for _, h := range t.PassHeaders {
		switch strings.ToLower(strings.TrimSpace(h)) {
		case "", "via", "from", "to", "call-id", "cseq", "contact", "route", "record-route", "max-forwards",
			"content-type", "content-length", "authorization", "proxy-authorization":
			v.add(p+"pass_headers", "%q cannot be passed between legs", h)
		}
	}
	if t.RegisterExpires < 0 || (t.RegisterExpires > 0 && t.RegisterExpires < 10*time.Second) {
		v.add(p+"register_expires", "%s is not 0 (one hour) or at least 10s", t.RegisterExpires)
	}
}

// ParseSource reads an IP address or CIDR prefix of trunks[].sources or ng.allow.
func ParseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		pf, err := netip.ParsePrefix(s)
		return pf.Masked(), err
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()), nil
}

// NormalizeNumber reduces a phone number to its digits with a leading +
// kept ("+1 (555) 010-2000" → "+15550102000"); "" if it has no digits or
// holds anything else than digits, spaces, dashes, dots and parentheses.
func NormalizeNumber(s string) string {
	var b strings.Builder
	for i, r := range strings.TrimSpace(s) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return ""
		}
	}
	out := b.String()
	if strings.Trim(out, "+") == "" {
		return ""
	}
	return out
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
