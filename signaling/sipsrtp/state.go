package sipsrtp

import (
	"sync/atomic"

	"github.com/mediarelay/mediarelay/media"
)

// Outcome is what a negotiation settled: the trunk's policy, the suite
// agreed ("" for plain RTP) and whether the leg's RTP is keyed.
type Outcome struct {
	Policy, Suite string
	Keyed         bool
}

// State is a call's view of its trunk leg's SRTP: the outcome of the
// current leg's negotiation (a transfer that replaces the leg replaces
// it) and the leg's packets that failed authentication. Set, Outcome and
// CountDrop are safe from any goroutine; AuthFailing is for one watcher.
type State struct {
	now       atomic.Pointer[Outcome]
	authFails atomic.Uint64 // SRTP/SRTCP authentication failures

	// AuthFailing's view at its previous tick.
	lastFails, lastIn uint64
	badTicks          int // consecutive ticks with failures and no good packet
}

// Set makes o the call's trunk leg's SRTP.
func (s *State) Set(o Outcome) { s.now.Store(&o) }

// Outcome is the call's trunk leg's SRTP; the zero Outcome before any
// negotiation.
func (s *State) Outcome() Outcome {
	if o := s.now.Load(); o != nil {
		return *o
	}
	return Outcome{}
}

// CountDrop counts a packet the leg dropped for reason, if it failed
// authentication.
func (s *State) CountDrop(reason string) {
	if reason == media.DropSRTPAuth {
		s.authFails.Add(1)
	}
}

// AuthLimit is how many consecutive one-second ticks may see SRTP
// authentication failures and no authentic packet before the call ends.
const AuthLimit = 3

// AuthFailing is a watcher's once-a-second check of the call's current
// RTP leg: a keyed stream that keeps failing authentication (a wrong key,
// or an attacker) while nothing authentic arrives, for AuthLimit ticks.
func (s *State) AuthFailing(leg *media.RTPLeg) bool {
	if leg == nil || !s.Outcome().Keyed {
		return false
	}
	fails := s.authFails.Load()
	in := leg.Stats().PacketsIn
	if fails > s.lastFails && in == s.lastIn {
		s.badTicks++
	} else {
		s.badTicks = 0
	}
	s.lastFails, s.lastIn = fails, in
	return s.badTicks >= AuthLimit
}
