package signaling

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/cdr/pgtest"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// TestCDRPostgresCall: with cdr.driver postgres a real call's CDR lands in
// a real PostgreSQL server, and the store's counts are in /metrics.
func TestCDRPostgresCall(t *testing.T) {
	srv := pgtest.Start(t)
	u := newTrunkUAS(t)
	r := startRelay(t, func(c *config.Config) {
		withTrunk(u, mediaplan.ModeAuto, "PCMU")(c)
		c.CDR.Driver, c.CDR.DSN, c.CDR.Path = "postgres", srv.DSN(), ""
		c.CDR.Spool = filepath.Join(t.TempDir(), "cdr.spool")
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	callID := activeCallID(t, r)
	p.sendFrames(25, 160)
	p.collect(300 * time.Millisecond)
	p.hangup()
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
	var rec cdr.Record
	waitFor(t, "cdr in postgres", 10*time.Second, func() bool {
		var err error
		rec, err = r.CDR().Query(context.Background(), callID)
		return err == nil && rec.EndCause != cdr.CauseInProgress
	})
	if rec.EndCause != cdr.CauseNormalBrowser || rec.EndedBy != "browser" || rec.Trunk != "carrier" || rec.To != "1000" ||
		!strings.EqualFold(rec.SIPCodec, "PCMU") || rec.WebRTCPacketsIn < 20 || rec.Answer.IsZero() {
		t.Errorf("CDR: %+v", rec)
	}
	if v := metricValue(metricsText(t, r), "mediarelay_cdr_records_total", `result="written"`); v != 1 {
		t.Errorf("cdr_records_total{written} = %v", v)
	}
}
