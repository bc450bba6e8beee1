package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSmoke builds and spawns the relay and places 3 calls for about
// 3 s, authenticated with token credentials (the default of --spawn) and
// with --user/--password. It asserts only that calls complete and audio
// flows both ways: timing belongs to benchmarks, not to pass/fail on a
// shared machine.
func TestSmoke(t *testing.T) {
	t.Run("token", func(t *testing.T) { smoke(t) })
	t.Run("user-password", func(t *testing.T) { smoke(t, "--user", "loadtest", "--password", "s3cret") })
	// mediarelay driven over ng, as rtpengine is: offer, answer, delete.
	t.Run("ng", func(t *testing.T) { smoke(t, "--control", "ng") })
}

func smoke(t *testing.T, extra ...string) {
	if testing.Short() {
		t.Skip("-short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin, err := relayBinary(ctx, dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("relay does not build: %v", err)
	}
	out := filepath.Join(dir, "smoke.json")
	var stdout, stderr bytes.Buffer
	args := append([]string{"--spawn", "--relay-bin", bin, "--calls", "3", "--rate", "10", "--hold", "3s", "--settle", "500ms", "--json", out}, extra...)
	rc := Main(ctx, args, &stdout, &stderr)
	t.Logf("exit %d\n%s", rc, stdout.String())
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no JSON report (exit %d): %v\nstderr:\n%s", rc, err, stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("bad JSON report: %v", err)
	}
	if len(rep.Targets) != 1 || len(rep.Targets[0].Steps) != 1 {
		t.Fatalf("want one run, got %+v\nstderr:\n%s", rep.Targets, stderr.String())
	}
	r := rep.Targets[0].Steps[0]
	if r.Established != 3 || r.Failed != 0 {
		t.Fatalf("calls established %d failed %v, want 3 and none\nstderr:\n%s", r.Established, r.FailedBy, stderr.String())
	}
	if got := r.Up.Expected - r.Up.Lost; got <= 0 {
		t.Errorf("no audio browser->trunk: %+v", r.Up)
	}
	if got := r.Down.Expected - r.Down.Lost; got <= 0 {
		t.Errorf("no audio trunk->browser: %+v", r.Down)
	}
}
