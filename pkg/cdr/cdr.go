// Package cdr writes call detail records, one row per call, to SQLite or
// PostgreSQL (one table, the same columns in both).
//
// Writes go through a bounded queue to a single writer goroutine, so the
// call path never waits on the database: when the queue is full the record
// is dropped, logged and counted rather than stalling a call's teardown.
// With PostgreSQL a batch that cannot be written because the server is
// unreachable is retried with backoff, and Close keeps trying for
// Options.FlushTimeout before it gives up on what is queued.
package cdr

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the pure-Go "sqlite" driver
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
	// "media_timeout", "ice_failed", "trunk_unreachable", "rejected", "error",
	// "admin_hangup" (an operator, through the call API), among others.
	EndCause string
	// EndedBy says who ended the call: "browser", "trunk", "relay" (a
	// timer, an error, shutdown), or "admin@ADDRESS" for an operator
	// through the call API (EndCause "admin_hangup").
	EndedBy string
	SIPCode int // final SIP status code of the call setup, 0 if none

	WebRTCCodec, SIPCodec string
	Mode                  string // "passthrough", "transcode" or "e2e" ("" if no media)

	WebRTCPacketsIn, WebRTCPacketsOut uint64
	SIPPacketsIn, SIPPacketsOut       uint64
	WebRTCLoss, SIPLoss               float64 // fraction lost, 0..1
	WebRTCJitterMs, SIPJitterMs       float64
	MOS                               float64 // estimated; see EstimateMOS
	DTMFEvents                        int
	// WebRTCTransport and SIPTransport say how each leg's media went:
	// "udp4", "udp6", "tcp4" or "tcp6" (ICE-TCP); "" if it never flowed.
	WebRTCTransport, SIPTransport string
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

// schemaVersion is the version of the cdr table (SQLite: PRAGMA
// user_version; PostgreSQL: the cdr_schema table); bump it with a
// migration when the table changes.
const schemaVersion = 3

// migrations[v] take a version v database to v+1; a new database gets
// createTable at schemaVersion at once.
var migrations = map[int][]string{
	1: {`ALTER TABLE cdr ADD COLUMN ended_by TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE cdr ADD COLUMN node TEXT NOT NULL DEFAULT ''`},
	2: {`ALTER TABLE cdr ADD COLUMN webrtc_transport TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE cdr ADD COLUMN sip_transport TEXT NOT NULL DEFAULT ''`},
}

// createTable is written with the types SQLite and PostgreSQL share, but
// for {int} and {real}, which the dialect fills in (PostgreSQL's INTEGER
// and REAL are 32 bits). Times are UTC ISO 8601 text in both (timeFormat):
// in PostgreSQL, start_time::timestamptz reads them.
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
	duration_ms        {int} NOT NULL,
	billable_ms        {int} NOT NULL,
	end_cause          TEXT NOT NULL,
	sip_code           {int} NOT NULL,
	webrtc_codec       TEXT NOT NULL,
	sip_codec          TEXT NOT NULL,
	mode               TEXT NOT NULL,
	webrtc_packets_in  {int} NOT NULL,
	webrtc_packets_out {int} NOT NULL,
	sip_packets_in     {int} NOT NULL,
	sip_packets_out    {int} NOT NULL,
	webrtc_loss        {real} NOT NULL,
	sip_loss           {real} NOT NULL,
	webrtc_jitter_ms   {real} NOT NULL,
	sip_jitter_ms      {real} NOT NULL,
	mos                {real} NOT NULL,
	dtmf_events        {int} NOT NULL,
	ended_by           TEXT NOT NULL DEFAULT '',
	node               TEXT NOT NULL DEFAULT '',
	webrtc_transport   TEXT NOT NULL DEFAULT '',
	sip_transport      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cdr_start_time ON cdr (start_time);`

const columns = `call_id, browser_call_id, trunk_call_id, from_uri, to_uri, trunk, direction,
	start_time, answer_time, end_time, duration_ms, billable_ms, end_cause, sip_code,
	webrtc_codec, sip_codec, mode, webrtc_packets_in, webrtc_packets_out, sip_packets_in,
	sip_packets_out, webrtc_loss, sip_loss, webrtc_jitter_ms, sip_jitter_ms, mos, dtmf_events, ended_by,
	webrtc_transport, sip_transport`

// insertColumns are the columns a write sets: columns and the node.
const insertColumns = columns + `, node`

// insertRecord inserts a row, or completes the row Begin wrote for the
// call; a second final record for a call changes nothing (RowsAffected 0).
const insertRecord = `INSERT INTO cdr (` + insertColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
	ended_by = excluded.ended_by, node = excluded.node,
	webrtc_transport = excluded.webrtc_transport, sip_transport = excluded.sip_transport
	WHERE cdr.end_cause = '` + CauseInProgress + `'`

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
	Retries uint64 // batches tried again after the database could not be reached
	Spooled uint64 // records waiting in the spool file for the database
}

// Options configure a Store.
type Options struct {
	// QueueSize is how many records may wait for the writer
	// (DefaultQueueSize if 0).
	QueueSize int
	// Log receives the store's warnings and errors (slog.Default if nil).
	Log *slog.Logger
	// Node names this relay in the node column, so that relays sharing a
	// database close only their own calls left in progress at start. The
	// default is the host name.
	Node string
	// FlushTimeout is how long Close keeps retrying queued records while
	// PostgreSQL is unreachable (DefaultFlushTimeout if 0).
	FlushTimeout time.Duration
	// SpoolPath, with PostgreSQL, is a file where records wait while the
	// server cannot take them: the queue keeps moving, and what Close
	// could not write is written after the next start. Empty: no spool;
	// records wait in the queue and Close gives up after FlushTimeout.
	SpoolPath string
	// SpoolMaxBytes bounds the spool file (DefaultSpoolMaxBytes if 0);
	// records beyond it are counted as failed.
	SpoolMaxBytes int64
}

// DefaultFlushTimeout bounds how long Close waits for an unreachable
// PostgreSQL server before it gives up on the queued records.
const DefaultFlushTimeout = 10 * time.Second

// Backoff between attempts to write a batch to an unreachable server.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// insertTimeout bounds one attempt to write a batch.
const insertTimeout = 15 * time.Second

// dialect is what differs between the databases.
type dialect struct {
	name      string
	intType   string
	realType  string
	insert    string // insertRecord with the dialect's placeholders
	closeOpen string // closes the node's calls left in progress
	// retry: a batch that fails for want of the server is tried again.
	retry bool
}

var (
	sqliteDialect = dialect{name: "sqlite", intType: "INTEGER", realType: "REAL", insert: insertRecord,
		closeOpen: `UPDATE cdr SET end_cause = ? WHERE end_cause = ? AND node = ?`}
	postgresDialect = dialect{name: "postgres", intType: "BIGINT", realType: "DOUBLE PRECISION", retry: true,
		insert:    numbered(insertRecord),
		closeOpen: numbered(`UPDATE cdr SET end_cause = ? WHERE end_cause = ? AND node = ?`)}
)

// numbered turns ? placeholders into PostgreSQL's $1, $2, ….
func numbered(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (d dialect) createTable() string {
	return strings.NewReplacer("{int}", d.intType, "{real}", d.realType).Replace(createTable)
}

// Store is an open CDR database and its writer goroutine. Its methods are
// safe for concurrent use.
type Store struct {
	db    *sql.DB
	d     dialect
	log   *slog.Logger
	node  string
	flush time.Duration

	sp      *spool // with PostgreSQL and Options.SpoolPath; the writer's alone
	spooled atomic.Int64

	mu      sync.Mutex
	closed  bool
	closing chan struct{}       // closed by Close: the writer stops waiting for an outage to end
	queue   chan Record         // records for the writer
	pending map[string]struct{} // records queued but not yet inserted (pendingKey)
	done    chan struct{}       // closed when the writer has drained the queue

	written, dropped, failed, retries atomic.Uint64
}

// Open opens (creating if absent) the SQLite database at path in WAL mode,
// creates or migrates the cdr table, and starts the writer.
func Open(path string) (*Store, error) {
	return OpenWith(path, DefaultQueueSize, slog.Default())
}

// OpenWith is Open with the queue size and logger given.
func OpenWith(path string, queueSize int, log *slog.Logger) (*Store, error) {
	return OpenSQLite(path, Options{QueueSize: queueSize, Log: log})
}

// OpenSQLite is Open with options.
func OpenSQLite(path string, o Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("cdr: empty database path")
	}
	if strings.ContainsAny(path, "?#") {
		// The driver reads everything after '?' as connection options.
		return nil, fmt.Errorf("cdr: database path %q must not contain '?' or '#'", path)
	}
	// busy_timeout first so that a second process reading the file (a
	// billing export) makes us wait briefly instead of failing.
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("cdr: open %s: %w", path, err)
	}
	return start(db, sqliteDialect, path, o)
}

// OpenPostgres connects to the PostgreSQL server dsn names (a postgres://
// URL or key=value pairs, as libpq reads them), creates or migrates the cdr
// table, and starts the writer. The server must be reachable now; later
// outages are ridden out (see the package comment). The DSN's password
// never appears in errors or logs.
func OpenPostgres(dsn string, o Options) (*Store, error) {
	name := RedactDSN(dsn)
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		// pgconn's parse errors quote the DSN; say only what is wrong.
		return nil, fmt.Errorf("cdr: postgres DSN %s does not parse", name)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("cdr: open postgres %s: %w", name, err)
	}
	return start(db, postgresDialect, name, o)
}

// start migrates the schema, closes this node's calls a killed relay left
// in progress, and starts the writer.
func start(db *sql.DB, d dialect, name string, o Options) (*Store, error) {
	if o.QueueSize < 1 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	migrate := migrateSQLite
	if d.name == postgresDialect.name {
		migrate = migratePostgres
	}
	if err := migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, fmt.Errorf("cdr: %s: %w", name, err)
	}
	res, err := db.ExecContext(ctx, d.closeOpen, CauseRelayRestart, CauseInProgress, o.Node)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cdr: %s: close calls left in progress: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		o.Log.Warn("CDRs of calls in progress when the relay last stopped closed", "db", name, "rows", n, "cause", CauseRelayRestart)
	}
	var sp *spool
	if o.SpoolPath != "" && d.retry {
		if o.SpoolMaxBytes <= 0 {
			o.SpoolMaxBytes = DefaultSpoolMaxBytes
		}
		if sp, err = openSpool(o.SpoolPath, o.SpoolMaxBytes); err != nil {
			db.Close()
			return nil, err
		}
		if sp.count > 0 {
			o.Log.Info("CDRs spooled while the database was away will be written", "spool", o.SpoolPath, "records", sp.count)
		}
	}
	s := &Store{
		sp:      sp,
		db:      db,
		d:       d,
		log:     o.Log.With("component", "cdr", "db", name),
		node:    o.Node,
		flush:   o.FlushTimeout,
		closing: make(chan struct{}),
		queue:   make(chan Record, o.QueueSize),
		pending: make(map[string]struct{}),
		done:    make(chan struct{}),
	}
	if sp != nil {
		s.spooled.Store(int64(sp.count))
	}
	go s.writer()
	return s, nil
}

// migrateSQLite brings the schema to schemaVersion (PRAGMA user_version),
// refusing a newer one.
func migrateSQLite(ctx context.Context, db *sql.DB, d dialect) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if err := upgrade(ctx, db, d, version); err != nil {
		return err
	}
	if version != schemaVersion {
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
			return fmt.Errorf("set schema version: %w", err)
		}
	}
	return nil
}

// migratePostgres brings the schema to schemaVersion, recorded in the
// cdr_schema table, in one transaction under an advisory lock so that
// relays starting together against one database migrate it once.
func migratePostgres(ctx context.Context, db *sql.DB, d dialect) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	// 0x6d6564 is "med": any constant that other applications of the
	// database are unlikely to lock.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7169380)`); err != nil {
		return fmt.Errorf("lock for migration: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS cdr_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create cdr_schema: %w", err)
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM cdr_schema`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if err := upgrade(ctx, tx, d, version); err != nil {
		return err
	}
	if version != schemaVersion {
		if _, err := tx.ExecContext(ctx, `INSERT INTO cdr_schema (version) VALUES ($1)`, schemaVersion); err != nil {
			return fmt.Errorf("set schema version: %w", err)
		}
	}
	return tx.Commit()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// upgrade creates the table at schemaVersion (version 0) or applies the
// migrations from version.
func upgrade(ctx context.Context, db execer, d dialect, version int) error {
	switch {
	case version > schemaVersion:
		return fmt.Errorf("schema version %d is newer than this relay's %d", version, schemaVersion)
	case version == 0:
		// A new database (or one made by hand without a version).
		for _, q := range strings.SplitAfter(d.createTable(), ";") {
			if strings.TrimSpace(q) == "" {
				continue
			}
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("create table: %w", err)
			}
		}
		return nil
	}
	for v := version; v < schemaVersion; v++ {
		for _, q := range migrations[v] {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
			}
		}
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

// Stats returns the counts of written, dropped, failed and retried records.
func (s *Store) Stats() Stats {
	return Stats{Written: s.written.Load(), Dropped: s.dropped.Load(), Failed: s.failed.Load(), Retries: s.retries.Load(),
		Spooled: uint64(s.spooled.Load())}
}

// QueueLength is how many records wait for the writer.
func (s *Store) QueueLength() int { return len(s.queue) }

// Close stops accepting records, waits until every queued one is written
// (with PostgreSQL unreachable, for Options.FlushTimeout at most), and
// closes the database. Calling it again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	close(s.closing)
	close(s.queue) // safe: Write sends only under mu and checks closed
	s.mu.Unlock()
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("cdr: close: %w", err)
	}
	return nil
}

// writer inserts queued records, batching what has piled up into one
// transaction so a burst of hang-ups costs one fsync, not hundreds. With a
// spool, it also writes spooled records once the database takes them.
func (s *Store) writer() {
	defer close(s.done)
	batch := make([]Record, 0, maxBatch)
	backoff := time.Duration(0) // records an earlier run spooled: at once
	var retry <-chan time.Time
	arm := func() {
		if retry == nil && s.sp != nil && s.sp.count > 0 {
			retry = time.After(backoff)
		}
	}
	arm()
	for {
		select {
		case r, ok := <-s.queue:
			if !ok {
				s.flushSpool()
				return
			}
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
			s.write(batch)
			s.mu.Lock()
			for _, r := range batch {
				delete(s.pending, pendingKey(r))
			}
			s.mu.Unlock()
			if backoff == 0 {
				backoff = minBackoff
			}
			arm()
		case <-retry:
			retry = nil
			if s.replay() {
				backoff = minBackoff
			} else {
				backoff = min(2*max(backoff, minBackoff), maxBackoff)
			}
			arm()
		}
	}
}

// toSpool puts batch in the spool; what does not fit is counted as failed.
func (s *Store) toSpool(batch []Record, why error) {
	n, err := s.sp.append(batch)
	s.spooled.Store(int64(s.sp.count))
	if n > 0 {
		s.log.Warn("CDRs spooled: the database does not take them now", "records", n, "spooled", s.sp.count, "err", why)
	}
	if err != nil {
		s.fail(len(batch)-n, err)
	}
}

// replay writes the spooled records; it reports whether the spool is
// empty now. What was written leaves the spool even if the rest fails.
func (s *Store) replay() bool {
	recs, err := s.sp.load()
	if err != nil {
		s.log.Error("spool unreadable", "err", err)
		return false
	}
	done := 0
	for done < len(recs) {
		chunk := recs[done:min(done+maxBatch, len(recs))]
		if err = s.insert(chunk); err != nil {
			break
		}
		done += len(chunk)
	}
	if done > 0 || len(recs) == 0 {
		if rerr := s.sp.replace(recs[done:]); rerr != nil {
			s.log.Error("spool not rewritten", "err", rerr)
		}
		s.spooled.Store(int64(s.sp.count))
	}
	if err != nil {
		n := s.retries.Add(1)
		s.log.Warn("spooled CDRs not written yet; retrying", "records", len(recs)-done, "retries_total", n, "err", err)
		return false
	}
	if done > 0 {
		s.log.Info("spooled CDRs written", "records", done)
	}
	return true
}

// flushSpool, at Close, tries the spool until FlushTimeout; what stays
// there is written after the next start.
func (s *Store) flushSpool() {
	if s.sp == nil || s.sp.count == 0 {
		return
	}
	deadline := time.Now().Add(s.flush)
	backoff := minBackoff
	for !s.replay() {
		if time.Now().Add(backoff).After(deadline) {
			s.log.Warn("CDRs stay in the spool for the next start", "spool", s.sp.path, "records", s.sp.count)
			return
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// write inserts batch. With a spool, a batch the server does not take
// goes there; without one, while the server cannot be reached, write
// tries again with backoff, until Close has waited FlushTimeout.
func (s *Store) write(batch []Record) {
	if s.sp != nil {
		// Behind what waits in the spool, or instead of waiting here.
		if s.sp.count > 0 {
			s.toSpool(batch, errors.New("earlier records are spooled"))
			return
		}
		if err := s.insert(batch); err != nil {
			s.retries.Add(1)
			s.toSpool(batch, err)
		}
		return
	}
	backoff := minBackoff
	closing := s.closing
	var deadline time.Time
	for {
		err := s.insert(batch)
		if err == nil {
			return
		}
		if !s.d.retry {
			s.fail(len(batch), err)
			return
		}
		select {
		case <-s.closing:
			if deadline.IsZero() {
				deadline = time.Now().Add(s.flush)
			}
			if time.Now().After(deadline) {
				s.fail(len(batch), fmt.Errorf("gave up at shutdown: %w", err))
				return
			}
			closing = nil // closed: waiting on it would not wait
		default:
		}
		n := s.retries.Add(1)
		s.log.Warn("CDRs not written yet; retrying", "records", len(batch), "retry_in", backoff.String(), "retries_total", n, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-closing:
			t.Stop()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// insert writes batch in one transaction. A record the database refuses
// (a duplicate call id) is counted as failed and the others go on; an
// error returned means nothing of the batch was written.
func (s *Store) insert(batch []Record) error {
	// Bounded, so that a server that stopped answering (not refusing)
	// cannot hold the writer, and Close, for ever.
	ctx, cancel := context.WithTimeout(context.Background(), insertTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	stmt, err := tx.PrepareContext(ctx, s.d.insert)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer stmt.Close()
	inserted, failed := 0, 0
	for _, r := range batch {
		// In SQLite a failed INSERT undoes only itself; in PostgreSQL it
		// aborts the transaction unless a savepoint limits it.
		if s.d.retry {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT rec`); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
		}
		res, err := stmt.ExecContext(ctx, s.args(r)...)
		if err != nil && s.d.retry {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return fmt.Errorf("insert: %w", err) // the connection, not the record
			}
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT rec`); err != nil {
				return fmt.Errorf("rollback to savepoint: %w", err)
			}
		}
		if err == nil {
			if n, _ := res.RowsAffected(); n == 0 {
				err = errors.New("a final record for this call id is already stored")
			}
		}
		if err != nil {
			failed++
			s.log.Error("CDR not written", "call_id", r.CallID, "err", err)
			continue
		}
		if r.EndCause != CauseInProgress {
			inserted++
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.failed.Add(uint64(failed))
	s.written.Add(uint64(inserted))
	return nil
}

func (s *Store) fail(n int, err error) {
	s.failed.Add(uint64(n))
	s.log.Error("CDRs not written", "records", n, "err", err)
}

func (s *Store) args(r Record) []any {
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
		r.WebRTCTransport, r.SIPTransport, s.node,
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
	err := s.db.QueryRowContext(ctx, s.query(`SELECT `+columns+` FROM cdr WHERE call_id = ?`), callID).Scan(
		&r.CallID, &r.BrowserCallID, &r.TrunkCallID, &r.From, &r.To, &r.Trunk, &r.Direction,
		&start, &answer, &end, &durationMs, &billableMs, &r.EndCause, &r.SIPCode,
		&r.WebRTCCodec, &r.SIPCodec, &r.Mode, &wIn, &wOut, &sIn, &sOut,
		&r.WebRTCLoss, &r.SIPLoss, &r.WebRTCJitterMs, &r.SIPJitterMs, &r.MOS, &r.DTMFEvents, &r.EndedBy,
		&r.WebRTCTransport, &r.SIPTransport,
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
	if err := s.db.QueryRowContext(ctx, s.query(`SELECT count(*) FROM cdr WHERE end_cause != ?`), CauseInProgress).Scan(&n); err != nil {
		return 0, fmt.Errorf("cdr: count: %w", err)
	}
	return n, nil
}

// query gives q the dialect's placeholders.
func (s *Store) query(q string) string {
	if s.d.name == postgresDialect.name {
		return numbered(q)
	}
	return q
}
