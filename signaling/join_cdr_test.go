package signaling

import (
	"database/sql"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/signaling/join"
)

// TestJoinCDREndedBy: when a trunk leg of a join hangs up, the join's CDR
// says a trunk ended it, as a call's CDR says who ended the call.
func TestJoinCDREndedBy(t *testing.T) {
	target := newTrunkUAS(t)
	r, u, alice := answeredCall(t, withTarget(target))
	alice.mu.Lock()
	d := alice.dialogs[0]
	alice.mu.Unlock()
	if res := browserRefer(t, d, "<sip:7001@127.0.0.1>"); res.StatusCode != 202 {
		t.Fatalf("REFER answered %d", res.StatusCode)
	}
	waitChan(t, "the transfer target's INVITE", target.answered)
	waitFor(t, "the join", 10*time.Second, func() bool { return len(r.joins.List()) == 1 })
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "a BYE to the target after the caller hung up", target.byes)
	if rows := cdrRows(t, r, 2); rows[1] != [2]string{join.Direction, cdr.CauseNormalTrunk} {
		t.Fatalf("CDR rows %v", rows)
	}
	db, err := sql.Open("sqlite", "file:"+r.cfg.CDR.Path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var endedBy string
	if err := db.QueryRow(`SELECT ended_by FROM cdr WHERE direction = ?`, join.Direction).Scan(&endedBy); err != nil {
		t.Fatal(err)
	}
	if endedBy != cdr.EndedByTrunk {
		t.Errorf("the join's CDR ended_by = %q, want %q", endedBy, cdr.EndedByTrunk)
	}
}
