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
	r, u := joinedCall(t, target)
	waitFor(t, "the join", 10*time.Second, func() bool { return len(r.joins.List()) == 1 })
	if err := u.bye(); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "a BYE to the target after the caller hung up", target.byes)
	if cause, _ := lastEnd(t, r, 2); cause != cdr.CauseNormalTrunk {
		t.Fatalf("the join ended with %q", cause)
	}
	db, err := sql.Open("sqlite", "file:"+r.cfg.CDR.Path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var endedBy string
	if err := db.QueryRow(`SELECT ended_by FROM cdr WHERE direction = ?`, join.Direction).Scan(&endedBy); err != nil || endedBy != cdr.EndedByTrunk {
		t.Errorf("the join's CDR ended_by = %q (%v), want %q", endedBy, err, cdr.EndedByTrunk)
	}
}
