//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyDrain delivers SIGUSR1, the operator's "drain this node", to c.
func notifyDrain(c chan os.Signal) { signal.Notify(c, syscall.SIGUSR1) }
