//go:build !unix

package main

import "os"

// notifyDrain does nothing where there is no SIGUSR1; POST /admin/drain
// on the loopback HTTP listener drains the node there.
func notifyDrain(chan os.Signal) {}
