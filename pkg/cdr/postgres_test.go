package cdr

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr/pgtest"
)

func waitStats(t *testing.T, s *Store, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(s.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPostgresWriteQueryMigrate(t *testing.T) {
	srv := pgtest.Start(t)
	s, err := OpenPostgres(srv.DSN(), Options{Log: quiet, Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	answered := sample("pg-1")
	unanswered := unansweredSample("pg-2")
	open := sample("pg-3")
	for _, err := range []error{s.Write(answered), s.Write(unanswered), s.Begin(open)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, s, "two final records", func(st Stats) bool { return st.Written == 2 })
	if err := s.Write(open); err != nil {
		t.Fatal(err)
	}
	// A second final record for a call changes nothing and is counted.
	dup := answered
	dup.EndCause = "busy"
	if err := s.Write(dup); err != nil {
		t.Fatal(err)
	}
	waitStats(t, s, "the completed call and the refused duplicate", func(st Stats) bool { return st.Written == 3 && st.Failed == 1 })
	for _, want := range []Record{answered, unanswered, open} {
		got, err := s.Query(context.Background(), want.CallID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read back\n%+v\nwant\n%+v", got, want)
		}
	}
	if n, err := s.Count(context.Background()); err != nil || n != 3 {
		t.Errorf("Count = %d, %v", n, err)
	}
	// A call in progress when this node stopped is closed at its next
	// start; another node's is not.
	if err := s.Begin(sample("pg-open-a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	other, err := OpenPostgres(srv.DSN(), Options{Log: quiet, Node: "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := other.Query(context.Background(), "pg-open-a"); err != nil || r.EndCause != CauseInProgress {
		t.Errorf("another node's start closed our call: %+v %v", r, err)
	}
	other.Close()
	s, err = OpenPostgres(srv.DSN(), Options{Log: quiet, Node: "node-a"})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if r, err := s.Query(context.Background(), "pg-open-a"); err != nil || r.EndCause != CauseRelayRestart {
		t.Errorf("our call left in progress: %+v %v", r, err)
	}
	var versions int
	if err := s.db.QueryRow(`SELECT count(*) FROM cdr_schema`).Scan(&versions); err != nil || versions != 1 {
		t.Errorf("cdr_schema rows = %d (%v): the schema was migrated again", versions, err)
	}
}

// TestPostgresOutage stops the server while calls end and starts it again:
// nothing queued is lost, whether the server comes back while the relay
// runs or while it shuts down.
func TestPostgresOutage(t *testing.T) {
	srv := pgtest.Start(t)
	// The server trusts loopback, so any password does; it must show
	// nowhere in what the store logs while it retries.
	dsn := strings.Replace(srv.DSN(), "postgres@", "postgres:hunter2@", 1)
	var logged bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(p)
	}), nil))
	s, err := OpenPostgres(dsn, Options{Log: log, FlushTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	write := func(k int) {
		t.Helper()
		for range k {
			n++
			if err := s.Write(sample(fmt.Sprintf("outage-%d", n))); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(5)
	waitStats(t, s, "before the outage", func(st Stats) bool { return st.Written == 5 })

	srv.Stop()
	write(20)
	waitStats(t, s, "retries during the outage", func(st Stats) bool { return st.Retries > 0 })
	srv.Restart()
	waitStats(t, s, "after the outage", func(st Stats) bool { return st.Written == 25 })

	srv.Stop()
	write(10)
	waitStats(t, s, "retries during the second outage", func(st Stats) bool { return st.Retries > 1 })
	srv.Restart()
	if err := s.Close(); err != nil { // flushes what is queued
		t.Fatal(err)
	}
	if st := s.Stats(); st.Written != 35 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 35 written and nothing lost", st)
	}
	db, err := sql.Open("pgx", srv.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM cdr WHERE call_id LIKE 'outage-%'`).Scan(&rows); err != nil || rows != 35 {
		t.Errorf("%d rows in PostgreSQL (%v), want 35", rows, err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if text := logged.String(); strings.Contains(text, "hunter2") || !strings.Contains(text, "retrying") {
		t.Errorf("the store's log shows the password, or no retries:\n%s", text)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestPostgresGivesUpAtShutdown: with the server gone for good, Close
// returns after FlushTimeout and counts what it could not write.
func TestPostgresGivesUpAtShutdown(t *testing.T) {
	srv := pgtest.Start(t)
	s, err := OpenPostgres(srv.DSN(), Options{Log: quiet, FlushTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for i := range 3 {
		if err := s.Write(sample(fmt.Sprintf("lost-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if st := s.Stats(); st.Failed != 3 || st.Written != 0 {
		t.Errorf("stats %+v, want 3 failed", st)
	}
}
