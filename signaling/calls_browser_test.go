package signaling

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestAPIBrowserHangup: while headless Chromium's softphone is in a call
// through a trunk, the operator's page (/calls, another Chromium) lists
// the call, and its hang-up button ends it on both legs with a CDR that
// says the operator did.
func TestAPIBrowserHangup(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	u := newTrunkUAS(t)
	r := startRelay(t, func(c *config.Config) {
		withTrunk(u, mediaplan.ModeAuto, "PCMU")(c)
		c.HTTP.AdminToken = testAdminToken
	})
	wav := filepath.Join(t.TempDir(), "tone.wav")
	if err := browsertest.WriteToneWAV(wav, []float64{400}, 10); err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer bcancel()
	browser, err := browsertest.Launch(bctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	type outcome struct {
		res browsertest.Result
		err error
	}
	called := make(chan outcome, 1)
	go func() {
		res, err := browser.Call(bctx, browsertest.Options{
			PageURL: "http://" + r.HTTPAddr().String() + "/", Target: "sip:1000@127.0.0.1", Hold: 20 * time.Second,
		})
		called <- outcome{res, err}
	}()
	waitFor(t, "the browser's call answered", time.Minute, func() bool {
		for _, c := range r.calls.List() {
			if c.media.Started() {
				return true
			}
		}
		return false
	})
	id := activeCallID(t, r)

	dir, err := browsertest.Dir()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]string{
		"pageUrl": "http://" + r.HTTPAddr().String() + "/calls", "callId": id, "token": testAdminToken,
		// For a look at the page: MEDIARELAY_CALLS_SCREENSHOT=/tmp/calls.png
		"screenshot": os.Getenv("MEDIARELAY_CALLS_SCREENSHOT"),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "callspage.mjs"), string(req))
	cmd.Dir = dir
	out, err := cmd.Output()
	var res struct {
		Cells []string `json:"cells"`
		Gone  bool     `json:"gone"`
		Log   []string `json:"log"`
		Error string   `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatalf("callspage.mjs: %v %v: %s", err, jerr, out)
	}
	if err != nil || res.Error != "" || !res.Gone {
		t.Fatalf("callspage.mjs: %v %s\n%v", err, res.Error, res.Log)
	}
	for _, want := range []string{id, "1000", "carrier", "outbound", "answered", mediaplan.ModePassthrough, "PCMU / PCMU"} {
		if !slices.Contains(res.Cells, want) {
			t.Errorf("the page's row %q lacks %q", res.Cells, want)
		}
	}
	waitChan(t, "the trunk's BYE", u.byes)
	select {
	case o := <-called:
		// The page reports the hold cut short by the far end: that is
		// the operator's hang-up reaching the browser.
		if o.res.EndedBy != "remote" || !o.res.Established {
			t.Errorf("the browser's call: %v, established %v, ended by %q (want the relay's BYE)", o.err, o.res.Established, o.res.EndedBy)
		}
	case <-time.After(90 * time.Second): // the page holds the call 20 s, ended or not
		t.Error("the browser's call did not end")
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
	if rec := callRecord(t, r, id); rec.EndCause != cdr.CauseAdminHangup || rec.EndedBy != "admin@127.0.0.1" {
		t.Errorf("CDR end cause %q, ended by %q; want %s by admin@127.0.0.1", rec.EndCause, rec.EndedBy, cdr.CauseAdminHangup)
	}
}
