//go:build !linux

package main

// tuneRuntime is a no-op where the relay does not run in production.
func tuneRuntime() {}
