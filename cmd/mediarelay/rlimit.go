//go:build unix

package main

import (
	"log/slog"
	"syscall"
)

// raiseFileLimit lifts the soft limit on open files to the hard limit: every
// call, connection and RTP port is a descriptor. (Go's runtime does this
// too since 1.19; doing it here says so in the log and survives a change.)
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		old := lim.Cur
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("cannot raise the open-file limit", "soft", old, "hard", lim.Max, "err", err)
			return
		}
	}
	log.Info("open-file limit", "soft", lim.Cur, "hard", lim.Max)
}
