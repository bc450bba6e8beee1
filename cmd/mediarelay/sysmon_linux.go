package main

import (
	"os"
	"strings"
	"syscall"
)

// sysmonGODEBUG keeps the Go runtime's monitor thread (sysmon) out of its
// deep sleep. Sysmon sleeps deeply whenever every P is idle, which for a
// media relay is between two rounds of packets, and every cgo call (each
// Opus encode or decode) that finds it so wakes it with a futex; it then
// polls every 20 µs for a millisecond before it backs off. Transcoding
// 60 calls, that polling was 16 % of the relay's CPU samples and the
// setting below saves about a fifth of its CPU per call (BENCHMARKS.md).
// The runtime skips the deep sleep while schedtrace is on; at this
// interval (2^31 ms, 24.8 days) the trace it prints is one line when
// the machine has been up that long, and another 24.8 days later.
const sysmonGODEBUG = "schedtrace=2147483647"

// tuneRuntime re-executes the relay once with sysmonGODEBUG added to
// GODEBUG, which the runtime reads only at start-up. An operator's own
// schedtrace wins. It returns only if the re-exec is not possible, and
// the relay then runs as it is.
func tuneRuntime() {
	cur := os.Getenv("GODEBUG")
	if strings.Contains(cur, "schedtrace=") {
		return
	}
	v := sysmonGODEBUG
	if cur != "" {
		v = cur + "," + v
	}
	env := []string{"GODEBUG=" + v}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") { // the runtime reads the first
			env = append(env, kv)
		}
	}
	// /proc/self/exe is this program even if its file was replaced
	// since (an upgrade in progress).
	_ = syscall.Exec("/proc/self/exe", os.Args, env)
}
