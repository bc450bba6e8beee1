package cdr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func sample(id string) Record {
	start := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	return Record{
		CallID: id, BrowserCallID: "b-" + id, TrunkCallID: "t-" + id,
		From: "sip:alice@relay", To: "sip:+15551234567@carrier", Trunk: "carrier", Direction: "outbound",
		Start: start, Answer: start.Add(3 * time.Second), End: start.Add(65*time.Second + 500*time.Millisecond),
		EndCause: "normal", SIPCode: 200, WebRTCCodec: "opus", SIPCodec: "PCMU", Mode: "transcode",
		WebRTCPacketsIn: 3100, WebRTCPacketsOut: 3098, SIPPacketsIn: 3099, SIPPacketsOut: 3100,
		WebRTCLoss: 0.01, SIPLoss: 0.002, WebRTCJitterMs: 4.5, SIPJitterMs: 1.25, MOS: 4.3, DTMFEvents: 2, EndedBy: "browser",
		WebRTCTransport: "tcp6", SIPTransport: "udp4",
	}
}

// unansweredSample is a record of a call the trunk refused busy.
func unansweredSample(id string) Record {
	r := sample(id)
	r.Answer = time.Time{}
	r.EndCause, r.SIPCode, r.Mode = "busy", 486, ""
	return r
}

func TestWriteCloseReopenRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	answered := sample("call-1")
	unanswered := unansweredSample("call-2")
	for _, r := range []Record{answered, unanswered} {
		if err := s.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := s.Write(sample("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}

	s, err = OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, want := range []Record{answered, unanswered} {
		got, err := s.Query(ctx, want.CallID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read back\n%+v\nwant\n%+v", got, want)
		}
	}
	if n, err := s.Count(ctx); err != nil || n != 2 {
		t.Errorf("Count = %d, %v; want 2", n, err)
	}
	if _, err := s.Query(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Query(missing) = %v, want ErrNotFound", err)
	}

	// The derived columns a billing export reads.
	var duration, billable int64
	var answer any
	if err := s.db.QueryRow(`SELECT duration_ms, billable_ms, answer_time FROM cdr WHERE call_id = 'call-2'`).
		Scan(&duration, &billable, &answer); err != nil {
		t.Fatal(err)
	}
	if duration != 65500 || billable != 0 || answer != nil {
		t.Errorf("call-2 duration_ms=%d billable_ms=%d answer_time=%v, want 65500 0 NULL", duration, billable, answer)
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestOneRowPerCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(sample("dup")); err != nil {
		t.Fatal(err)
	}
	// Either still queued (refused at once) or already inserted (refused
	// by the primary key); never a second row.
	err = s.Write(sample("dup"))
	if err != nil && !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second Write = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Written != 1 {
		t.Errorf("Stats = %+v, want 1 written", st)
	}
	if err == nil && st.Failed != 1 {
		t.Errorf("duplicate accepted by Write but Stats = %+v, want 1 failed", st)
	}

	s, err = OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, _ := s.Count(context.Background()); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
}

func TestConcurrentWritersAndCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 10000, quiet)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 250
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Write(sample(fmt.Sprintf("w%d-%d", w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Close right away: everything queued must still land.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Written != writers*each || st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("Stats = %+v, want %d written", st, writers*each)
	}
	s, err = OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.Count(context.Background()); err != nil || n != writers*each {
		t.Errorf("Count = %d, %v; want %d", n, err, writers*each)
	}
}

func TestQueueFullDropsAndCounts(t *testing.T) {
	s, err := OpenWith(filepath.Join(t.TempDir(), "cdr.db"), 1, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Hold the writer up by holding a write transaction on another connection.
	conn, err := s.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	var full error
	for i := 0; i < 100 && full == nil; i++ {
		full = s.Write(sample(fmt.Sprint("q", i)))
		if full != nil && !errors.Is(full, ErrQueueFull) {
			t.Fatalf("Write = %v, want ErrQueueFull", full)
		}
	}
	if full == nil {
		t.Fatal("queue of 1 never filled while the writer was blocked")
	}
	if s.Stats().Dropped == 0 {
		t.Errorf("Stats = %+v, want a drop counted", s.Stats())
	}
	conn.ExecContext(context.Background(), "ROLLBACK")
	conn.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 1, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenWith(path, 1, quiet); err == nil {
		t.Fatal("Open accepted a database with a newer schema")
	}
}

func TestEstimateMOS(t *testing.T) {
	perfect := EstimateMOS("PCMU", 0, 0, 0)
	if perfect < 4.3 || perfect > 4.5 {
		t.Errorf("clean G.711 MOS = %.2f, want about 4.4", perfect)
	}
	if m := EstimateMOS("pcma", 0.05, 20, 50); m >= perfect || m < 2.5 {
		t.Errorf("5%% loss MOS = %.2f, want below clean %.2f and above 2.5", m, perfect)
	}
	if m := EstimateMOS("opus", 0.05, 20, 50); m <= EstimateMOS("PCMU", 0.05, 20, 50) {
		t.Errorf("Opus should tolerate loss better than G.711, got %.2f", m)
	}
	if m := EstimateMOS("G729", 1, 500, 1000); m != 1 {
		t.Errorf("hopeless call MOS = %.2f, want 1", m)
	}
	for _, m := range []float64{EstimateMOS("x", math.NaN(), math.Inf(1), -5), EstimateMOS("", -1, -1, math.NaN())} {
		if math.IsNaN(m) || m < 1 || m > 4.5 {
			t.Errorf("MOS from bad inputs = %v, want within 1..4.5", m)
		}
	}
}

// TestBeginCompletedAtEnd: the row written at answer is completed in place
// by the final record; the call still has one row.
func TestBeginCompletedAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	r := Record{CallID: "c1", From: "alice", To: "+1555", Direction: "outbound", Start: start, Answer: start.Add(time.Second)}
	if err := s.Begin(r); err != nil {
		t.Fatal(err)
	}
	r.End, r.EndCause, r.SIPCode = start.Add(time.Minute), "normal", 200
	if err := s.Write(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Query(context.Background(), "c1")
	if err != nil || got.EndCause != "normal" || !got.End.Equal(r.End) {
		t.Fatalf("row: %+v, %v", got, err)
	}
	if n, _ := s.Count(context.Background()); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
}

// TestInProgressClosedAtRestart: a row left in progress (the relay was
// killed mid-call) is closed with relay_restart when the store opens again.
func TestInProgressClosedAtRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if err := s.Begin(Record{CallID: "crashed", Start: start, Answer: start.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	s.Close() // as far as the database is concerned, a kill -9 after the answer
	s, err = OpenWith(path, 16, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Query(context.Background(), "crashed")
	if err != nil || got.EndCause != CauseRelayRestart || !got.End.Equal(start.Add(time.Second)) {
		t.Fatalf("row: %+v, %v", got, err)
	}
	// A late final record for it changes nothing.
	if err := s.Write(Record{CallID: "crashed", Start: start, End: start.Add(time.Hour), EndCause: "normal"}); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateVersion1: a database of schema 1 (no ended_by, no node, no
// transports) keeps its rows and gains the columns.
func TestMigrateVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.db")
	s, err := OpenWith(path, 1, quiet)
	if err != nil {
		t.Fatal(err)
	}
	old := sample("old")
	old.EndedBy, old.WebRTCTransport, old.SIPTransport = "", "", ""
	if err := s.Write(old); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenWith(path, 1, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Make it what a schema-1 relay left: no ended_by column, version 1.
	for _, q := range []string{`ALTER TABLE cdr DROP COLUMN ended_by`, `ALTER TABLE cdr DROP COLUMN node`,
		`ALTER TABLE cdr DROP COLUMN webrtc_transport`, `ALTER TABLE cdr DROP COLUMN sip_transport`, `PRAGMA user_version = 1`} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s, err = OpenWith(path, 1, quiet)
	if err != nil {
		t.Fatalf("open schema 1: %v", err)
	}
	defer s.Close()
	got, err := s.Query(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, old) {
		t.Errorf("migrated row = %+v, want %+v", got, old)
	}
	fresh := sample("new")
	fresh.EndedBy = "admin@127.0.0.1"
	if err := s.Write(fresh); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, s, 1)
	if got, err := s.Query(context.Background(), "new"); err != nil || got.EndedBy != fresh.EndedBy {
		t.Errorf("new row ended_by = %q (%v)", got.EndedBy, err)
	}
	var version int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version != schemaVersion {
		t.Errorf("user_version = %d (%v), want %d", version, err, schemaVersion)
	}
}

func waitWritten(t *testing.T, s *Store, n uint64) {
	t.Helper()
	for i := 0; i < 500 && s.Stats().Written < n; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Stats().Written < n {
		t.Fatalf("written = %d, want %d", s.Stats().Written, n)
	}
}
