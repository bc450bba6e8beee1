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

	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestAPIBrowserHangup opens the operator's page (/calls) in headless
// Chromium while a call is up: the page lists the call, and its hang-up
// button ends it on both legs with a CDR that says the operator did.
func TestAPIBrowserHangup(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	r, u, p, id := startAdminCall(t)

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
	checkAdminHangup(t, r, u, p, id)
}
