// Package callreg is the relay's registry of the calls in progress: each
// filed by its id and by the dialog id of either of its SIP legs, so the
// router finds the call and the leg an in-dialog request belongs to, and a
// transfer's Replaces finds the call it names. It also counts the calls
// that came over each source (a browser's WebSocket), for the idle reaper.
//
// The registry's lock is exported (Lock, Unlock): the calls keep under it
// what a transfer replaces (a call's legs) and what several goroutines
// read, and the methods documented so expect it held.
package callreg

import (
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/signaling/sipleg"
)

// Side is one of a call's two SIP legs.
type Side int

// A call's sides.
const (
	None Side = iota
	Browser
	Trunk
)

// Call is what the registry needs of a call: its dialog on either side.
type Call interface {
	comparable
	// Leg is the call's dialog on side s; the registry's lock is held.
	Leg(s Side) *sipleg.Leg
}

// Registry holds the calls in progress. The zero value is not usable;
// New makes one.
type Registry[C Call] struct {
	mu       sync.Mutex
	byID     map[string]C
	byDialog map[string]C   // by either leg's dialog id, for the router
	bySource map[string]int // calls by source (a browser's WebSocket peer address)
}

// New is an empty registry.
func New[C Call]() *Registry[C] {
	return &Registry[C]{byID: map[string]C{}, byDialog: map[string]C{}, bySource: map[string]int{}}
}

// Lock takes the registry's lock, which also guards what calls keep under
// it.
func (g *Registry[C]) Lock() { g.mu.Lock() }

// Unlock releases the registry's lock.
func (g *Registry[C]) Unlock() { g.mu.Unlock() }

// Add files c under id and counts it against source ("" for none).
func (g *Registry[C]) Add(id string, c C, source string) {
	g.mu.Lock()
	g.byID[id] = c
	if source != "" {
		g.bySource[source]++
	}
	g.mu.Unlock()
}

// Index files c under one of its dialogs.
func (g *Registry[C]) Index(dialog string, c C) {
	g.mu.Lock()
	g.byDialog[dialog] = c
	g.mu.Unlock()
}

// Remove takes the call filed under id out, with both its legs' dialogs
// and its count against source; if it was filed, also (when not nil) runs
// before the lock is released.
func (g *Registry[C]) Remove(id, source string, also func(c C)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.byID[id]
	if !ok {
		return
	}
	delete(g.byID, id)
	delete(g.byDialog, c.Leg(Browser).ID())
	delete(g.byDialog, c.Leg(Trunk).ID())
	if also != nil {
		also(c)
	}
	if source != "" {
		if g.bySource[source]--; g.bySource[source] <= 0 {
			delete(g.bySource, source)
		}
	}
}

// Unindex stops finding a call by dialog (a leg handed to a join); the
// lock is held.
func (g *Registry[C]) Unindex(dialog string) { delete(g.byDialog, dialog) }

// Reindex files c under dialog in place of old (a transfer's new leg);
// the lock is held.
func (g *Registry[C]) Reindex(old, dialog string, c C) {
	delete(g.byDialog, old)
	g.byDialog[dialog] = c
}

// Get is the call filed under id, or the zero C.
func (g *Registry[C]) Get(id string) C {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byID[id]
}

// List is a snapshot of the calls in progress.
func (g *Registry[C]) List() []C {
	g.mu.Lock()
	defer g.mu.Unlock()
	calls := make([]C, 0, len(g.byID))
	for _, c := range g.byID {
		calls = append(calls, c)
	}
	return calls
}

// Len is the number of calls in progress.
func (g *Registry[C]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.byID)
}

// Busy reports whether a call in progress came over source.
func (g *Registry[C]) Busy(source string) bool {
	g.mu.Lock()
	n := g.bySource[source]
	g.mu.Unlock()
	return n > 0
}

// ByReplaces finds the call whose dialog on side s rep names (RFC 3891),
// or the zero C.
func (g *Registry[C]) ByReplaces(rep sipleg.Replaces, s Side) C {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.byID {
		if l := c.Leg(s); l.CallID() == rep.CallID && rep.Matches(l.ID()) {
			return c
		}
	}
	var zero C
	return zero
}

// ForRequest finds the call an in-dialog request belongs to and which of
// its legs sent it; ok is false when it belongs to none.
func (g *Registry[C]) ForRequest(req *sip.Request) (c C, s Side, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// The relay is UAS on the dialogs the peer placed, UAC on the others.
	if id, err := sip.DialogIDFromRequestUAS(req); err == nil {
		if c, found := g.byDialog[id]; found {
			for _, s := range []Side{Browser, Trunk} {
				if l := c.Leg(s); l.ID() == id && l.PlacedByPeer() {
					return c, s, true
				}
			}
		}
	}
	if id, err := sip.DialogIDFromRequestUAC(req); err == nil {
		if c, found := g.byDialog[id]; found {
			for _, s := range []Side{Trunk, Browser} {
				if l := c.Leg(s); l.ID() == id && !l.PlacedByPeer() {
					return c, s, true
				}
			}
		}
	}
	return c, None, false
}
