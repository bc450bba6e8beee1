package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
	// Browsers on ICE-TCP: every call connects to the relay's passive TCP
	// candidate, and the relay itself must report its browser legs as
	// TCP. Over TCP nothing may be lost at all.
	t.Run("ice-tcp", func(t *testing.T) {
		r := smoke(t, "--webrtc-transport", "tcp")
		if r == nil {
			return
		}
		if r.BrowserTransport != TransportTCP {
			t.Errorf("report says the browser legs used %q, want tcp", r.BrowserTransport)
		}
		if r.RelayLegTransports["tcp4"] != 3 || len(r.RelayLegTransports) != 1 {
			t.Errorf("the relay reports browser legs %v (%s), want tcp4:3", r.RelayLegTransports, r.RelayLegTransportsErr)
		}
		if r.Up.Lost != 0 || r.Down.Lost != 0 {
			t.Errorf("lost %d browser->trunk and %d trunk->browser, want none", r.Up.Lost, r.Down.Lost)
		}
	})
}

// TestSmokeE2E: end-to-end calls (the trunk's media_mode e2e). The trunk
// UAS answers DTLS-SRTP with its own certificate, and the load client's
// handshake is with it, through the relay: one UAS handshake per call,
// the relay reports every call as e2e, and the echo, decrypted and
// re-encrypted with the UAS's own keys, comes back whole.
func TestSmokeE2E(t *testing.T) {
	r := smoke(t, "--scenario", "e2e")
	if r == nil {
		return
	}
	if r.UASDTLSHandshakes != 3 {
		t.Errorf("the trunk UAS completed %d DTLS handshakes, want 3 (one per call)", r.UASDTLSHandshakes)
	}
	if r.RelayModes["e2e"] != 3 || len(r.RelayModes) != 1 {
		t.Errorf("the relay reports modes %v (%s), want e2e:3", r.RelayModes, r.RelayLegTransportsErr)
	}
	if r.Up.Lost != 0 || r.Down.Lost != 0 {
		t.Errorf("lost %d browser->trunk and %d trunk->browser, want none", r.Up.Lost, r.Down.Lost)
	}
}

// TestICETCPOnlyAgainstMediarelay: rtpengine has no ICE-TCP, so asking
// for it there is refused before anything starts, rather than run over UDP.
func TestICETCPOnlyAgainstMediarelay(t *testing.T) {
	for _, args := range [][]string{
		{"--spawn", "--against", "rtpengine", "--webrtc-transport", "tcp"},
		{"--spawn", "--control", "ng", "--webrtc-transport", "tcp"},
		{"--spawn", "--webrtc-transport", "sctp"},
	} {
		var stdout, stderr bytes.Buffer
		if rc := Main(t.Context(), args, &stdout, &stderr); rc != 2 || !strings.Contains(stderr.String(), "--webrtc-transport") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and an error naming --webrtc-transport", args, rc, stderr.String())
		}
	}
	// Nor is e2e run where the relay would terminate DTLS itself.
	for _, args := range [][]string{
		{"--spawn", "--scenario", "e2e", "--against", "rtpengine"},
		{"--spawn", "--scenario", "e2e", "--control", "ng"},
	} {
		var stdout, stderr bytes.Buffer
		if rc := Main(t.Context(), args, &stdout, &stderr); rc != 2 || !strings.Contains(stderr.String(), "e2e") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and an error about e2e", args, rc, stderr.String())
		}
	}
}

// smoke runs the benchmark with extra arguments and checks the calls; it
// returns the run's result, nil if the test has already failed or skipped.
func smoke(t *testing.T, extra ...string) *Result {
	if testing.Short() {
		t.Skip("-short")
		return nil
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
	if rep.Transport == "" {
		t.Errorf("the report does not say the browser legs' transport")
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
	return r
}
