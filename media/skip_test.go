package media

import (
	"os"
	"testing"
)

// missing skips a test that needs what this machine lacks (io_uring, media
// loops, /proc); under CI, whose Linux machines have all three, the test
// fails instead, so a lost feature cannot pass as a skip.
func missing(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: %v (CI machines have it)", what, err)
	}
	t.Skipf("%s here: %v", what, err)
}
