package signaling

// Drain makes the relay refuse new calls set up over ng (the proxy gets an
// error and picks another node) and answer /healthz with 503 so that load
// balancers notice, while the calls in progress go on to their end.
// It cannot be undone short of a restart.
func (r *Relay) Drain() { r.drain.Drain() }

// Draining reports whether Drain was called.
func (r *Relay) Draining() bool { return r.drain.Draining() }
