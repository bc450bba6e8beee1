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
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestAPIBrowserHangup opens the operator's page (/calls) in headless
// Chromium while a call is up: the page lists the call, and its hang-up
// button ends it on both legs with a CDR that says the operator did.
func TestAPIBrowserHangup(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	u := newTrunkUAS(t)
	r := startRelay(t, func(c *config.Config) {
		withTrunk(u, ModeAuto, "PCMU")(c)
		c.HTTP.AdminToken = testAdminToken
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
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
	for _, want := range []string{id, "1000", "carrier", "outbound", "answered", ModePassthrough, "PCMU / PCMU"} {
		if !slices.Contains(res.Cells, want) {
			t.Errorf("the page's row %q lacks %q", res.Cells, want)
		}
	}
	for leg, byes := range map[string]chan struct{}{"trunk": u.byes, "browser": p.byes} {
		select {
		case <-byes:
		case <-time.After(5 * time.Second):
			t.Errorf("the %s never got a BYE", leg)
		}
	}
	var rec cdr.Record
	waitFor(t, "cdr", 5*time.Second, func() bool {
		var err error
		rec, err = r.CDR().Query(context.Background(), id)
		return err == nil && rec.EndCause != cdr.CauseInProgress
	})
	if rec.EndCause != endAdminHangup || rec.EndedBy != "admin@127.0.0.1" {
		t.Errorf("CDR end cause %q, ended by %q", rec.EndCause, rec.EndedBy)
	}
}
