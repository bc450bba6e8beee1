package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/mediarelay/mediarelay/signaling"
)

// stopOnSignal stops the relay at the first SIGTERM or interrupt. A drained
// node (SIGUSR1, POST /admin/drain) first lets its calls end; a second
// signal stops it at once.
func stopOnSignal(sig <-chan os.Signal, relay *signaling.Relay, stop func(), log *slog.Logger) {
	<-sig
	if relay.Draining() && relay.ActiveCalls() > 0 {
		log.Info("drained: stopping when the last call ends; signal again to stop now", "calls", relay.ActiveCalls())
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for relay.ActiveCalls() > 0 {
			select {
			case <-sig:
				stop()
				return
			case <-t.C:
			}
		}
	}
	stop()
}
