package media

import (
	"errors"
	"fmt"
)

// errSRTPKeyed is returned by StartSRTP on a leg that already has keys.
var errSRTPKeyed = errors.New("rtp leg: SRTP already keyed")

// StartSRTP keys a leg that was created without SRTP, once the keys are
// known: for SDES when the peer's answer arrives, for DTLS-SRTP when the
// handshake is over. The port pair had to exist before (its port is in the
// offer), the keys could not.
//
// It must be called before SetRemote and before the first ReadRTP. With
// LatchSDP nothing reads the leg's SRTP state until a remote is set: the
// RTCP receive path drops every packet and the RTCP sender has no
// destination. SetRemote's atomic store then publishes the keys to the
// leg's goroutines. (With LatchLearn an RTCP packet sprayed at the port
// before the answer would still be examined; callers key a learning leg
// before it can receive, i.e. before the remote is set, which is the same
// call order.)
func (l *RTPLeg) StartSRTP(c *SRTPConfig) error {
	if c == nil {
		return errors.New("rtp leg: nil SRTP config")
	}
	if l.srtp != nil {
		return errSRTPKeyed
	}
	sess, err := newSRTPSession(c)
	if err != nil {
		return fmt.Errorf("rtp leg: %w", err)
	}
	l.srtp = sess
	return nil
}

// SRTPEnabled reports whether the leg encrypts its media.
func (l *RTPLeg) SRTPEnabled() bool { return l.srtp != nil }
