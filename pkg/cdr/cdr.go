// Package cdr writes call detail records, one row per call, to SQLite.
//
// Writes go through a bounded queue to a single writer goroutine, so the
// call path never waits on the disk: when the queue is full the record is
// dropped, logged and counted rather than stalling a call's teardown.
package cdr

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// Record is one call's detail record.
type Record struct {
	CallID        string // the relay's own call id; the primary key
	BrowserCallID string // SIP Call-ID of the browser (WebRTC) leg
	TrunkCallID   string // SIP Call-ID of the trunk leg
	From, To      string
	Trunk         string // trunk name; empty for browser-to-browser or echo calls
	Direction     string // "outbound" (browser→trunk) or "inbound"

	Start  time.Time
	Answer time.Time // zero if the call was never answered
	End    time.Time

	// EndCause is one of "normal", "busy", "no_answer", "cancelled",
	// "media_timeout", "ice_failed", "trunk_unreachable", "rejected", "error".
	EndCause string
	// EndedBy says who ended the call: "browser", "trunk", "relay" (a
	// timer, an error, shutdown), or "admin@ADDRESS" for an operator
	// through the call API (EndCause "admin_hangup").
	EndedBy string
	SIPCode int // final SIP status code of the call setup, 0 if none

	WebRTCCodec, SIPCodec string
	Mode                  string // "passthrough" or "transcode" ("" if no media)

	WebRTCPacketsIn, WebRTCPacketsOut uint64
	SIPPacketsIn, SIPPacketsOut       uint64
	WebRTCLoss, SIPLoss               float64 // fraction lost, 0..1
	WebRTCJitterMs, SIPJitterMs       float64
	MOS                               float64 // estimated; see EstimateMOS
	DTMFEvents                        int
}

// Errors returned by Store.
var (
	// ErrQueueFull means the writer is behind; the record was dropped.
	ErrQueueFull = errors.New("cdr: write queue full, record dropped")
	// ErrClosed means Write was called after Close.
	ErrClosed = errors.New("cdr: store closed")
	// ErrNotFound means Query found no record for the call id.
	ErrNotFound = errors.New("cdr: no record for call")
	// ErrDuplicate means a record for the call id is already queued.
	ErrDuplicate = errors.New("cdr: record for call already written")
)

// schemaVersion is stored in PRAGMA user_version; bump it with a migration
// in migrate when the table changes.
const schemaVersion = 2

// migrations[v] takes a version v database to v+1.
var migrations = map[int]string{
	1: `ALTER TABLE cdr ADD COLUMN ended_by TEXT NOT NULL DEFAULT ''`,
}

const createTable = `CREATE TABLE IF NOT EXISTS cdr (
	call_id            TEXT PRIMARY KEY NOT NULL,
	browser_call_id    TEXT NOT NULL,
	trunk_call_id      TEXT NOT NULL,
	from_uri           TEXT NOT NULL,
	to_uri             TEXT NOT NULL,
	trunk              TEXT NOT NULL,
	direction          TEXT NOT NULL,
	start_time         TEXT NOT NULL,
	answer_time        TEXT,
	end_time           TEXT NOT NULL,
	duration_ms        INTEGER NOT NULL,
	billable_ms        INTEGER NOT NULL,
	end_cause          TEXT NOT NULL,
	sip_code           INTEGER NOT NULL,
	webrtc_codec       TEXT NOT NULL,
	sip_codec          TEXT NOT NULL,
	mode               TEXT NOT NULL,
	webrtc_packets_in  INTEGER NOT NULL,
	webrtc_packets_out INTEGER NOT NULL,
	sip_packets_in     INTEGER NOT NULL,
	sip_packets_out    INTEGER NOT NULL,
	webrtc_loss        REAL NOT NULL,
	sip_loss           REAL NOT NULL,
	webrtc_jitter_ms   REAL NOT NULL,
	sip_jitter_ms      REAL NOT NULL,
	mos                REAL NOT NULL,
	dtmf_events        INTEGER NOT NULL,
	ended_by           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cdr_start_time ON cdr (start_time);`

const columns = `call_id, browser_call_id, trunk_call_id, from_uri, to_uri, trunk, direction,
	start_time, answer_time, end_time, duration_ms, billable_ms, end_cause, sip_code,
	webrtc_codec, sip_codec, mode, webrtc_packets_in, webrtc_packets_out, sip_packets_in,
	sip_packets_out, webrtc_loss, sip_loss, webrtc_jitter_ms, sip_jitter_ms, mos, dtmf_events, ended_by`

// insertRecord inserts a row, or completes the row Begin wrote for the
// call; a second final record for a call changes nothing (RowsAffected 0).
const insertRecord = `INSERT INTO cdr (` + columns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT(call_id) DO UPDATE SET
	browser_call_id = excluded.browser_call_id, trunk_call_id = excluded.trunk_call_id,
	from_uri = excluded.from_uri, to_uri = excluded.to_uri, trunk = excluded.trunk, direction = excluded.direction,
	start_time = excluded.start_time, answer_time = excluded.answer_time, end_time = excluded.end_time,
	duration_ms = excluded.duration_ms, billable_ms = excluded.billable_ms, end_cause = excluded.end_cause,
	sip_code = excluded.sip_code, webrtc_codec = excluded.webrtc_codec, sip_codec = excluded.sip_codec,
	mode = excluded.mode, webrtc_packets_in = excluded.webrtc_packets_in, webrtc_packets_out = excluded.webrtc_packets_out,
	sip_packets_in = excluded.sip_packets_in, sip_packets_out = excluded.sip_packets_out,
	webrtc_loss = excluded.webrtc_loss, sip_loss = excluded.sip_loss, webrtc_jitter_ms = excluded.webrtc_jitter_ms,
	sip_jitter_ms = excluded.sip_jitter_ms, mos = excluded.mos, dtmf_events = excluded.dtmf_events,
	ended_by = excluded.ended_by
	WHERE cdr.end_cause = '` + CauseInProgress + `'`

// End causes the store itself gives.
const (
	// CauseInProgress marks the row Begin writes when a call is answered;
	// Write completes it when the call ends.
	CauseInProgress = "in_progress"
	// CauseRelayRestart closes, at the next start, rows a relay left in
	// progress (it was killed); their end time is the last one known.
	CauseRelayRestart = "relay_restart"
)

// timeFormat is UTC ISO 8601 with microseconds: readable in the sqlite3
// shell and understood by SQLite's date functions, and it sorts as text.
const timeFormat = "2006-01-02T15:04:05.000000Z"

// DefaultQueueSize is how many records may wait for the writer. A few
// seconds of a large relay's call-end rate; more only hides a stuck disk.
const DefaultQueueSize = 4096

// maxBatch bounds how many queued records go into one transaction.
const maxBatch = 256

// Stats counts what happened to records handed to Write.
type Stats struct {
	Written uint64 // rows inserted
	Dropped uint64 // refused by Write because the queue was full
	Failed  uint64 // dequeued but not inserted (database error, duplicate call id)
}

// Store is an open CDR database and its writer goroutine. Its methods are
// safe for concurrent use.
type Store struct {
	db  *sql.DB
	log *slog.Logger

	mu      sync.Mutex
	closed  bool
	queue   chan Record
	pending map[string]struct{} // records queued but not yet inserted (pendingKey)
	done    chan struct{}       // closed when the writer has drained the queue

	written, dropped, failed atomic.Uint64
}

// Open opens (creating if absent) the SQLite database at path in WAL mode,
// creates or migrates the cdr table, and starts the writer.
func Open(path string) (*Store, error) {
	return OpenWith(path, DefaultQueueSize, slog.Default())
}

// OpenWith is Open with the queue size and logger given.
func OpenWith(path string, queueSize int, log *slog.Logger) (*Store, error) {
	if path == "" {
		return nil, errors.New("cdr: empty database path")
	}
	if strings.ContainsAny(path, "?#") {
		// The driver reads everything after '?' as connection options.
		return nil, fmt.Errorf("cdr: database path %q must not contain '?' or '#'", path)
	}
	if queueSize < 1 {
		queueSize = 1
	}
	// busy_timeout first so that a second process reading the file (a
	// billing export) makes us wait briefly instead of failing.
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("cdr: open %s: %w", path, err)
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("cdr: %s: %w", path, err)
	}
	res, err := db.Exec(`UPDATE cdr SET end_cause = ? WHERE end_cause = ?`, CauseRelayRestart, CauseInProgress)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cdr: %s: close calls left in progress: %w", path, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		log.Warn("CDRs of calls in progress when the relay last stopped closed", "path", path, "rows", n, "cause", CauseRelayRestart)
	}
	s := &Store{
		db:      db,
		log:     log.With("component", "cdr", "path", path),
		queue:   make(chan Record, queueSize),
		pending: make(map[string]struct{}),
		done:    make(chan struct{}),
	}
	go s.writer()
	return s, nil
}

// migrate brings the schema to schemaVersion, refusing a newer one.
func migrate(db *sql.DB) error {
	var version int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case version > schemaVersion:
		return fmt.Errorf("schema version %d is newer than this relay's %d", version, schemaVersion)
	case version == schemaVersion:
		return nil
	case version == 0:
		// A new file (or one made by hand without a version).
		if _, err := db.Exec(createTable); err != nil {
			return fmt.Errorf("create table: %w", err)
		}
	default:
		for v := version; v < schemaVersion; v++ {
			if _, err := db.Exec(migrations[v]); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
			}
		}
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return nil
}

// Write queues r for the writer and returns at once. It fails with
// ErrQueueFull if the writer is behind, ErrDuplicate if a record with the
// same CallID is still queued, and ErrClosed after Close. A duplicate of a
// record already in the database is refused by the primary key when the
// writer inserts it: logged and counted in Stats().Failed.
func (s *Store) Write(r Record) error {
	if r.EndCause == CauseInProgress {
		return errors.New("cdr: a final record cannot be in progress")
	}
	return s.queueRecord(r)
}

// Begin records an answered call in progress, so a relay killed before
// the call ends leaves a row (closed at the next start with
// CauseRelayRestart). r.End is the answer time until Write completes it.
func (s *Store) Begin(r Record) error {
	r.EndCause = CauseInProgress
	r.End = r.Answer
	if r.End.IsZero() {
		r.End = r.Start
	}
	return s.queueRecord(r)
}

func pendingKey(r Record) string {
	if r.EndCause == CauseInProgress {
		return r.CallID + "\x00open"
	}
	return r.CallID
}

func (s *Store) queueRecord(r Record) error {
	if r.CallID == "" {
		return errors.New("cdr: record has no call id")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if _, dup := s.pending[pendingKey(r)]; dup {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrDuplicate, r.CallID)
	}
	select {
	case s.queue <- r:
		s.pending[pendingKey(r)] = struct{}{}
		s.mu.Unlock()
		return nil
	default:
	}
	s.mu.Unlock()
	// Log outside the lock: other calls ending now should not wait on it.
	n := s.dropped.Add(1)
	s.log.Warn("CDR dropped: write queue full", "call_id", r.CallID, "dropped_total", n)
	return fmt.Errorf("%w: %s", ErrQueueFull, r.CallID)
}

// Stats returns the counts of written, dropped and failed records.
func (s *Store) Stats() Stats {
	return Stats{Written: s.written.Load(), Dropped: s.dropped.Load(), Failed: s.failed.Load()}
}

// Close stops accepting records, waits until every queued one is written,
// and closes the database. Calling it again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	close(s.queue) // safe: Write sends only under mu and checks closed
	s.mu.Unlock()
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("cdr: close: %w", err)
	}
	return nil
}

// writer inserts queued records, batching what has piled up into one
// transaction so a burst of hang-ups costs one fsync, not hundreds.
func (s *Store) writer() {
	defer close(s.done)
	batch := make([]Record, 0, maxBatch)
	for r := range s.queue {
		batch = append(batch[:0], r)
	fill:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.insert(batch)
		s.mu.Lock()
		for _, r := range batch {
			delete(s.pending, pendingKey(r))
		}
		s.mu.Unlock()
	}
}

func (s *Store) insert(batch []Record) {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		s.fail(len(batch), "begin transaction", err)
		return
	}
	stmt, err := tx.PrepareContext(ctx, insertRecord)
	if err != nil {
		tx.Rollback()
		s.fail(len(batch), "prepare insert", err)
		return
	}
	inserted := 0
	for _, r := range batch {
		// A failed INSERT (duplicate call id) undoes only itself, not the
		// transaction, so one bad record does not lose the rest.
		res, err := stmt.ExecContext(ctx, args(r)...)
		if err == nil {
			if n, _ := res.RowsAffected(); n == 0 {
				err = errors.New("a final record for this call id is already stored")
			}
		}
		if err != nil {
			s.failed.Add(1)
			s.log.Error("CDR not written", "call_id", r.CallID, "err", err)
			continue
		}
		if r.EndCause != CauseInProgress {
			inserted++
		}
	}
	stmt.Close()
	if err := tx.Commit(); err != nil {
		s.fail(inserted, "commit", err)
		return
	}
	s.written.Add(uint64(inserted))
}

func (s *Store) fail(n int, what string, err error) {
	s.failed.Add(uint64(n))
	s.log.Error("CDRs not written", "records", n, "step", what, "err", err)
}

func args(r Record) []any {
	var answer any // NULL when never answered
	billable := time.Duration(0)
	if !r.Answer.IsZero() {
		answer = formatTime(r.Answer)
		if r.End.After(r.Answer) {
			billable = r.End.Sub(r.Answer)
		}
	}
	duration := time.Duration(0)
	if r.End.After(r.Start) {
		duration = r.End.Sub(r.Start)
	}
	return []any{
		r.CallID, r.BrowserCallID, r.TrunkCallID, r.From, r.To, r.Trunk, r.Direction,
		formatTime(r.Start), answer, formatTime(r.End), duration.Milliseconds(), billable.Milliseconds(),
		r.EndCause, r.SIPCode, r.WebRTCCodec, r.SIPCodec, r.Mode,
		clampInt64(r.WebRTCPacketsIn), clampInt64(r.WebRTCPacketsOut),
		clampInt64(r.SIPPacketsIn), clampInt64(r.SIPPacketsOut),
		r.WebRTCLoss, r.SIPLoss, r.WebRTCJitterMs, r.SIPJitterMs, r.MOS, r.DTMFEvents, r.EndedBy,
	}
}

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// clampInt64 fits a counter into SQLite's signed 64-bit INTEGER.
func clampInt64(n uint64) int64 {
	if n > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(n)
}

// Query reads back the record of one call (for tests and tools).
func (s *Store) Query(ctx context.Context, callID string) (Record, error) {
	var (
		r                      Record
		start, end             string
		answer                 sql.NullString
		durationMs, billableMs int64
		wIn, wOut, sIn, sOut   int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM cdr WHERE call_id = ?`, callID).Scan(
		&r.CallID, &r.BrowserCallID, &r.TrunkCallID, &r.From, &r.To, &r.Trunk, &r.Direction,
		&start, &answer, &end, &durationMs, &billableMs, &r.EndCause, &r.SIPCode,
		&r.WebRTCCodec, &r.SIPCodec, &r.Mode, &wIn, &wOut, &sIn, &sOut,
		&r.WebRTCLoss, &r.SIPLoss, &r.WebRTCJitterMs, &r.SIPJitterMs, &r.MOS, &r.DTMFEvents, &r.EndedBy,
	)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, fmt.Errorf("%w %s", ErrNotFound, callID)
	}
	if err != nil {
		return Record{}, fmt.Errorf("cdr: query %s: %w", callID, err)
	}
	r.WebRTCPacketsIn, r.WebRTCPacketsOut = uint64(wIn), uint64(wOut)
	r.SIPPacketsIn, r.SIPPacketsOut = uint64(sIn), uint64(sOut)
	if r.Start, err = parseTime(start); err != nil {
		return Record{}, fmt.Errorf("cdr: %s start_time: %w", callID, err)
	}
	if r.End, err = parseTime(end); err != nil {
		return Record{}, fmt.Errorf("cdr: %s end_time: %w", callID, err)
	}
	if answer.Valid {
		if r.Answer, err = parseTime(answer.String); err != nil {
			return Record{}, fmt.Errorf("cdr: %s answer_time: %w", callID, err)
		}
	}
	return r, nil
}

func parseTime(s string) (time.Time, error) { return time.Parse(timeFormat, s) }

// Count returns how many final records the database holds: calls in
// progress (Begin) are not counted until they end.
func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM cdr WHERE end_cause != ?`, CauseInProgress).Scan(&n); err != nil {
		return 0, fmt.Errorf("cdr: count: %w", err)
	}
	return n, nil
}
