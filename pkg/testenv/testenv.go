// Package testenv holds what tests share about the machine they run on.
package testenv

import (
	"os"
	"testing"
)

// Missing skips a test that needs what this machine lacks (io_uring
// refused by the kernel or a seccomp policy, media loops, /proc); under
// CI, whose Linux machines have all of them, the test fails instead, so a
// lost feature cannot pass as a skip.
func Missing(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: %v (CI machines have it)", what, err)
	}
	t.Skipf("%s here: %v", what, err)
}
