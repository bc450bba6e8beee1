package signaling

import "github.com/mediarelay/mediarelay/pkg/sdp"

// Helpers this package's tests used before pkg/sdp and signaling/ngnode
// took over what they read, so that the tests read as they did.

func normDir(a sdp.Audio) string { return a.EffectiveDirection() }

// ngSession was the relay's ng session of a call-id; the tests read its
// call. The sessions are signaling/ngnode's now.
func (r *Relay) ngSession(callID string) struct{ c *Call } {
	return struct{ c *Call }{r.ngNode.Session(callID).Call().(*ngCall).c}
}
