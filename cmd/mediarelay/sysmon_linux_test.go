package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestServeTunesRuntime starts `mediarelay serve` as a process and checks
// that it re-executed itself (same PID) with the sysmon setting added to
// the GODEBUG it was given, and serves; and that an operator's own
// schedtrace is left as it is.
func TestServeTunesRuntime(t *testing.T) {
	for _, tc := range []struct{ given, want string }{
		{"madvdontneed=1", "madvdontneed=1," + sysmonGODEBUG},
		{"schedtrace=0", "schedtrace=0"},
	} {
		t.Run(tc.given, func(t *testing.T) {
			t.Setenv("GODEBUG", tc.given)
			port := freePort(t)
			cmd, logs := startChild(t, fmt.Sprintf("http:\n  listen: 127.0.0.1:%d\nsip:\n  udp_listen: 127.0.0.1:0\n  tcp_listen: 127.0.0.1:0\nmedia:\n  bind_ip: 127.0.0.1\n", port))
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			deadline := time.Now().Add(20 * time.Second)
			for !httpAnswers(addr) {
				if time.Now().After(deadline) {
					t.Fatalf("relay never answered on %s:\n%s", addr, logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			// The process that answers is the one started: exec keeps the PID.
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range strings.Split(string(env), "\x00") {
				if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
					got = append(got, v)
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("GODEBUG of the running relay: %q, want [%q]", got, tc.want)
			}
		})
	}
}
