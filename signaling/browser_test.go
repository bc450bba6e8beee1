package signaling

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"

	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestBrowser loads the relay's own softphone page in headless Chromium,
// whose fake microphone plays 400 Hz and 1 kHz, and checks the tones come
// back: from the built-in echo (Opus passthrough), and through a trunk that
// only speaks PCMU, passed through (Chromium offers PCMU) and, with the
// trunk's media mode set to transcode, as Opus ↔ PCMU both ways.
func TestBrowser(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	tones, quiet := []float64{400, 1000}, 2500.0
	wav := filepath.Join(t.TempDir(), "tones.wav")
	if err := browsertest.WriteToneWAV(wav, tones, 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()

	u := newTrunkUAS(t)
	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "pcmu-auto", Match: "^1", Address: "sip:" + u.addr, Codecs: []string{"PCMU"}, MediaMode: ModeAuto},
			{Name: "pcmu-transcode", Match: "^2", Address: "sip:" + u.addr, Codecs: []string{"PCMU"}, MediaMode: ModeTranscode},
		}
	})
	modes := map[string]uint64{}
	page := "http://" + r.HTTPAddr().String() + "/"
	for _, tc := range []struct{ name, target, mode string }{
		{"echo", "sip:echo@127.0.0.1", ModePassthrough},
		{"pcmu-trunk", "sip:1555@127.0.0.1", ModePassthrough}, // Chromium offers PCMU too
		{"pcmu-trunk-transcoded", "sip:2555@127.0.0.1", ModeTranscode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := browser.Call(ctx, browsertest.Options{
				PageURL: page, Target: tc.target, Hold: 4 * time.Second, Freqs: append(tones, quiet),
			})
			if err != nil {
				t.Fatalf("call: %v (log: %v)", err, res.Log)
			}
			t.Logf("tone levels (dB over noise floor): %v", res.ToneDB)
			floor := res.ToneDB[quiet]
			for _, f := range tones {
				if db := res.ToneDB[f]; db < 20 || db < floor+15 {
					t.Errorf("%v Hz came back at %.1f dB (quiet %v Hz at %.1f dB): not detected", f, db, quiet, floor)
				}
			}
			before := modes[tc.mode]
			modes[tc.mode] = r.m.TranscodedCalls.With(tc.mode).Value()
			if modes[tc.mode] != before+1 {
				t.Errorf("the call did not run in mode %s", tc.mode)
			}
			waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
	n, err := r.CDR().Count(ctx)
	if err != nil || n != 3 {
		t.Fatalf("cdr rows: %d, %v", n, err)
	}
}
