package cdr

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

// closeInOutage opens a store with o on a fresh server, stops the server,
// writes n records named prefix0… and closes the store.
func closeInOutage(t *testing.T, o Options, prefix string, n int) (*pgtest.Server, *Store) {
	t.Helper()
	srv := pgtest.Start(t)
	s, err := OpenPostgres(srv.DSN(), o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for i := range n {
		if err := s.Write(sample(fmt.Sprintf("%s%d", prefix, i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	return srv, s
}

// TestPostgresGivesUpAtShutdown: with the server gone for good, Close
// returns after FlushTimeout and counts what it could not write.
func TestPostgresGivesUpAtShutdown(t *testing.T) {
	_, s := closeInOutage(t, Options{Log: quiet, FlushTimeout: 200 * time.Millisecond}, "lost-", 3)
	if st := s.Stats(); st.Failed != 3 || st.Written != 0 {
		t.Errorf("stats %+v, want 3 failed", st)
	}
}

// countRows counts the rows whose call id starts with prefix.
func countRows(t *testing.T, dsn, prefix string) int {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM cdr WHERE call_id LIKE $1`, prefix+"%").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPostgresSpool: with a spool, records the server cannot take wait on
// disk (the queue keeps moving) and are written when it is back.
func TestPostgresSpool(t *testing.T) {
	srv := pgtest.Start(t)
	spool := filepath.Join(t.TempDir(), "cdr.spool")
	s, err := OpenPostgres(srv.DSN(), Options{Log: quiet, SpoolPath: spool, QueueSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv.Stop()
	// Ten times what the queue holds: the spool takes them as they come.
	// A record the full queue refuses is sent again once it has room.
	for i := range 40 {
		for {
			err := s.Write(sample(fmt.Sprintf("spool-%d", i)))
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				t.Fatalf("record %d: %v", i, err)
			}
			for s.QueueLength() >= 4 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	waitStats(t, s, "all spooled", func(st Stats) bool { return st.Spooled == 40 })
	srv.Restart()
	waitStats(t, s, "spool written", func(st Stats) bool { return st.Written == 40 && st.Spooled == 0 })
	if n := countRows(t, srv.DSN(), "spool-"); n != 40 {
		t.Errorf("%d rows, want 40", n)
	}
	if st := s.Stats(); st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Errorf("spool file left after it was written: %v", err)
	}
}

// TestPostgresSpoolAcrossRestart: what a relay stopping during an outage
// could not write stays in the spool and is written after its next start.
func TestPostgresSpoolAcrossRestart(t *testing.T) {
	spool := filepath.Join(t.TempDir(), "cdr.spool")
	o := Options{Log: quiet, SpoolPath: spool, FlushTimeout: 100 * time.Millisecond}
	srv, s := closeInOutage(t, o, "restart-", 10)
	if st := s.Stats(); st.Spooled != 10 || st.Failed != 0 {
		t.Fatalf("after Close in the outage: %+v, want 10 spooled", st)
	}
	// A torn last line, as a crash mid-append leaves, is skipped.
	f, err := os.OpenFile(spool, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"CallID":"torn`)
	f.Close()

	srv.Restart()
	s, err = OpenPostgres(srv.DSN(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitStats(t, s, "spool written after the start", func(st Stats) bool { return st.Written == 10 && st.Spooled == 0 })
	if n := countRows(t, srv.DSN(), "restart-"); n != 10 {
		t.Errorf("%d rows, want 10", n)
	}
}

// TestSpoolBound: past its bound the spool refuses records, which are
// counted as failed, not silently lost.
func TestSpoolBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.spool")
	line, _ := json.Marshal(sample("bound-0"))
	sp, err := openSpool(path, int64(3*(len(line)+1)))
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := range 5 {
		recs = append(recs, sample(fmt.Sprintf("bound-%d", i)))
	}
	n, err := sp.append(recs)
	if n != 3 || !errors.Is(err, errSpoolFull) {
		t.Fatalf("append = %d, %v; want 3, errSpoolFull", n, err)
	}
	got, err := sp.load()
	if err != nil || len(got) != 3 || !reflect.DeepEqual(got[2], recs[2]) {
		t.Fatalf("load = %d records, %v", len(got), err)
	}
	if err := sp.replace(got[1:]); err != nil || sp.count != 2 {
		t.Fatalf("replace: %v, count %d", err, sp.count)
	}
	reopened, err := openSpool(path, 1<<20)
	if err != nil || reopened.count != 2 || reopened.size != sp.size {
		t.Fatalf("reopened: %+v, %v", reopened, err)
	}
	if err := sp.replace(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("empty spool still on disk: %v", err)
	}
}
