package signaling

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
)

// Drain makes the relay refuse new calls set up over ng (the proxy gets an
// error and picks another node) and answer /healthz with 503 so that load
// balancers notice, while the calls in progress go on to their end.
// It cannot be undone short of a restart.
func (r *Relay) Drain() {
	if !r.draining.Swap(true) {
		r.log.Info("draining: refusing new calls; calls in progress go on", "calls", r.ActiveCalls())
	}
}

// Draining reports whether Drain was called.
func (r *Relay) Draining() bool { return r.draining.Load() }

func (r *Relay) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if r.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "draining %d\n", r.ActiveCalls())
		return
	}
	fmt.Fprintln(w, "ok")
}

// adminDrain is POST /admin/drain, served only to loopback clients.
func (r *Relay) adminDrain(w http.ResponseWriter, req *http.Request) {
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
	r.Drain()
	fmt.Fprintf(w, "draining %d\n", r.ActiveCalls())
}
