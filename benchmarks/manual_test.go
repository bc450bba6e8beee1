package benchmarks

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestManualMain runs Main with the arguments in MRBENCH_ARGS, for trying the
// benchmark before cmd/mediarelay builds (e.g. MRBENCH_ARGS="--against
// rtpengine --calls 5 --hold 5s"). Skipped unless set.
func TestManualMain(t *testing.T) {
	args := os.Getenv("MRBENCH_ARGS")
	if args == "" {
		t.Skip("MRBENCH_ARGS not set")
	}
	if rc := Main(context.Background(), strings.Fields(args), os.Stdout, os.Stderr); rc != 0 {
		t.Fatalf("Main returned %d", rc)
	}
}
