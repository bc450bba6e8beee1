// Package drain is the relay's draining switch and the HTTP endpoints
// that show and set it: once drained, the relay refuses new calls (SIP
// INVITEs and ng offers) and /healthz answers 503 so that load balancers
// notice, while the calls in progress go on to their end. /admin/drain
// turns it on for a loopback client; nothing turns it off short of a
// restart.
package drain

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
)

// State is whether the relay drains.
type State struct {
	on     atomic.Bool
	log    *slog.Logger
	active func() int // the calls in progress, for the log and the endpoints
}

// New is a relay's switch, not draining; active counts its calls in
// progress.
func New(log *slog.Logger, active func() int) *State {
	return &State{log: log, active: active}
}

// Drain makes the relay refuse new calls while those in progress go on.
func (s *State) Drain() {
	if !s.on.Swap(true) {
		s.log.Info("draining: refusing new calls; calls in progress go on", "calls", s.active())
	}
}

// Draining reports whether Drain was called.
func (s *State) Draining() bool { return s.on.Load() }

// Healthz is GET /healthz: "ok", or 503 and the calls in progress while
// draining.
func (s *State) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if s.on.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "draining %d\n", s.active())
		return
	}
	fmt.Fprintln(w, "ok")
}

// Admin is POST /admin/drain, served only to loopback clients.
func (s *State) Admin(w http.ResponseWriter, req *http.Request) {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	ip, perr := netip.ParseAddr(host)
	if err != nil || perr != nil || !ip.Unmap().IsLoopback() {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	s.Drain()
	fmt.Fprintf(w, "draining %d\n", s.active())
}
