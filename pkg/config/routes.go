package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Routes is the table browser calls are routed by, compiled once from
// Trunks and Trunk: every trunk normalized, its Match compiled and its
// Address parsed, and the default trunk resolved. Signalling reads it and
// derives nothing itself.
type Routes struct {
	// Trunks are the entries of Config.Trunks, in order.
	Trunks []*Trunk
	// Default takes the calls no entry's Match matches: the entry `trunk`
	// names, or a trunk at the address `trunk` gives; nil when `trunk` is
	// empty.
	Default *Trunk
}

// Route returns the trunk for a browser call to user: the first entry
// whose Match matches user, else Default (nil when there is none).
func (rt *Routes) Route(user string) *Trunk {
	for _, t := range rt.Trunks {
		if t.match != nil && t.match.MatchString(user) {
			return t
		}
	}
	return rt.Default
}

// Routes compiles the routing table of c. Validate compiles it too, so a
// Config that Load or LoadFile returned always compiles; the relay calls
// Routes once, when it is built, and routes by the result.
func (c Config) Routes() (*Routes, error) { return compileRoutes(c.Trunks, c.Trunk) }

// compileRoutes builds the table from the trunks and the `trunk` key.
func compileRoutes(trunks []Trunk, def string) (*Routes, error) {
	rt := &Routes{Trunks: make([]*Trunk, 0, len(trunks))}
	for i, t := range trunks {
		ct, err := CompileTrunk(t)
		if err != nil {
			return nil, fmt.Errorf("trunks[%d] (%s): %w", i, t.Name, err)
		}
		rt.Trunks = append(rt.Trunks, ct)
		if def != "" && t.Name == def && rt.Default == nil {
			rt.Default = ct
		}
	}
	if def != "" && rt.Default == nil {
		t, err := CompileTrunk(Trunk{Name: "default", Address: def})
		if err != nil {
			return nil, fmt.Errorf("trunk: %w", err)
		}
		rt.Default = t
	}
	return rt, nil
}

// CompileTrunk returns a copy of t ready for calls: its values normalized
// and defaulted, its Match compiled and its Address parsed. Routes does it
// for configured trunks; the relay does it for trunks it makes (the echo
// endpoint).
func CompileTrunk(t Trunk) (*Trunk, error) {
	t.normalize()
	if t.Match != "" {
		re, err := regexp.Compile(t.Match)
		if err != nil {
			return nil, fmt.Errorf("match %q: %w", t.Match, err)
		}
		t.match = re
	}
	addr := t.Address
	if !strings.HasPrefix(addr, "sip:") && !strings.HasPrefix(addr, "sips:") {
		addr = "sip:" + addr
	}
	if err := sip.ParseUri(addr, &t.uri); err != nil {
		return nil, fmt.Errorf("address %q: %w", t.Address, err)
	}
	t.sources = nil // t is a copy: its caller's prefixes stay its own
	for _, src := range t.Sources {
		p, err := ParseSource(src)
		if err != nil {
			return nil, fmt.Errorf("sources %q: %w", src, err)
		}
		t.sources = append(t.sources, p)
	}
	if len(t.sources) == 0 {
		if ip, err := netip.ParseAddr(t.uri.Host); err == nil {
			t.sources = append(t.sources, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	return &t, nil
}

// URI is the trunk's parsed Address; the zero Uri for a trunk that was
// not compiled (an ng call's stand-in, which has no address).
func (t *Trunk) URI() sip.Uri { return t.uri }

// SourcePrefixes are the addresses the trunk's calls may come from:
// Sources parsed, or the trunk's own address when Sources is empty and
// Address names an IP.
func (t *Trunk) SourcePrefixes() []netip.Prefix { return t.sources }

// RequestURI is the Request-URI for calling user through the trunk.
func (t *Trunk) RequestURI(user string) *sip.Uri {
	u := t.uri.Clone()
	u.User = user
	if t.Transport != "" && t.Transport != "udp" {
		if u.UriParams == nil {
			u.UriParams = sip.NewParams()
		}
		u.UriParams.Add("transport", t.Transport)
	}
	return u
}

// PeerAddr is the trunk's address when its URI names an IP literal; the
// zero Addr for a host name.
func (t *Trunk) PeerAddr() netip.Addr {
	a, _ := netip.ParseAddr(strings.Trim(t.uri.Host, "[]"))
	return a
}
