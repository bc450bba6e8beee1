package media

import (
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/pion/stun/v4"
)

// ICE-lite on an RTP leg, for an end-to-end call whose far end speaks ICE
// in its SDP: the leg answers the far end's connectivity checks on its own
// port with its own credentials, and a source whose check verifies is
// latched like the SDP's address. A far end without ICE ignores the
// attributes and is reached at its c=/m= address as usual.

// legICE is an RTP leg's ICE-lite state.
type legICE struct {
	ufrag, pwd  string
	remoteUfrag atomic.Pointer[string]
	verified    atomic.Pointer[netip.AddrPort] // the last source whose check verified
}

// EnableICE gives the leg ICE credentials and makes it answer connectivity
// checks. Call it before the leg reads (before SetRemote and Serve). It
// returns the SDP lines (without "a=") that announce them: ice-lite,
// ice-ufrag, ice-pwd and the leg's host candidate at addr (the address the
// SDP's c= gives).
func (l *RTPLeg) EnableICE(addr netip.Addr) ([]string, error) {
	ufrag, err := iceToken(8)
	if err != nil {
		return nil, fmt.Errorf("rtp leg: ice: %w", err)
	}
	pwd, err := iceToken(24)
	if err != nil {
		return nil, fmt.Errorf("rtp leg: ice: %w", err)
	}
	l.ice = &legICE{ufrag: ufrag, pwd: pwd}
	prio := uint32(126)<<24 | uint32(65535)<<8 | 255 // RFC 8445 §5.1.2.1 host
	return []string{
		"ice-lite", "ice-ufrag:" + ufrag, "ice-pwd:" + pwd,
		fmt.Sprintf("candidate:1 1 udp %d %s %d typ host", prio, addr, l.local.Port()),
		"end-of-candidates",
	}, nil
}

// SetRemoteICE records the far end's ICE username fragment from its SDP:
// checks that carry another one are not answered.
func (l *RTPLeg) SetRemoteICE(ufrag string) {
	if l.ice != nil && ufrag != "" {
		l.ice.remoteUfrag.Store(&ufrag)
	}
}

// ICEVerified is the last source whose connectivity check verified; false
// before any.
func (l *RTPLeg) ICEVerified() (netip.AddrPort, bool) {
	if l.ice == nil {
		return netip.AddrPort{}, false
	}
	if a := l.ice.verified.Load(); a != nil {
		return *a, true
	}
	return netip.AddrPort{}, false
}

// iceVerified says whether from passed a connectivity check.
func (l *RTPLeg) iceVerified(from netip.AddrPort) bool {
	if l.ice == nil {
		return false
	}
	a := l.ice.verified.Load()
	return a != nil && *a == from
}

// iceCheck answers a connectivity check (RFC 8445 §7.3) from from and, when
// it verifies, latches from: media and DTLS are then accepted from it and
// sent to it. Anything else that looks like STUN is dropped and counted.
func (l *RTPLeg) iceCheck(pkt []byte, from netip.AddrPort) {
	m := &stun.Message{Raw: append([]byte(nil), pkt...)} // not the media path: checks are rare
	ok := m.Decode() == nil && m.Type == stun.BindingRequest
	var user stun.Username
	if ok {
		ok = user.GetFrom(m) == nil
	}
	local, remote, cut := strings.Cut(string(user), ":")
	ok = ok && cut && local == l.ice.ufrag && stun.NewShortTermIntegrity(l.ice.pwd).Check(m) == nil
	if ok && m.Contains(stun.AttrFingerprint) {
		ok = stun.Fingerprint.Check(m) == nil
	}
	if ru := l.ice.remoteUfrag.Load(); ok && ru != nil && *ru != remote {
		ok = false
	}
	if !ok {
		l.drop(DropUnlatched)
		return
	}
	res, err := stun.Build(m, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		stun.NewShortTermIntegrity(l.ice.pwd), stun.Fingerprint)
	if err != nil {
		return
	}
	if err := l.out.sendTo(res.Raw, from); err != nil {
		l.log.Debug("rtp leg: stun response failed", "to", from.String(), "err", err)
		return
	}
	a := from
	if cur := l.ice.verified.Load(); cur == nil || *cur != from {
		l.ice.verified.Store(&a)
		l.log.Info("rtp leg latched by ICE", "source", from.String())
	}
	// Again on every check: SetRemote (the answer may come after the
	// first check) forgets what was latched.
	if cur := l.latchedRTP.Load(); cur == nil || *cur != from {
		l.latchedRTP.Store(&a)
	}
}
