package cdr

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// DefaultSpoolMaxBytes bounds a spool file: about half a million records.
const DefaultSpoolMaxBytes = 256 << 20

// errSpoolFull means a record did not fit in the spool's bound.
var errSpoolFull = errors.New("cdr: spool full")

// spool is a file of records (one JSON object a line) that the writer
// could not hand to the database; they are written from it when the
// database takes writes again, at this start or the next. Only the
// writer goroutine uses it.
type spool struct {
	path  string
	max   int64
	size  int64
	count int
}

// openSpool opens the spool at path, counting what an earlier run left.
func openSpool(path string, max int64) (*spool, error) {
	sp := &spool{path: path, max: max}
	recs, err := sp.load()
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		sp.size = fi.Size()
	}
	sp.count = len(recs)
	return sp, nil
}

// append adds recs to the file and syncs it; past the bound it keeps the
// first that fit and reports how many it wrote, with errSpoolFull.
func (sp *spool) append(recs []Record) (int, error) {
	f, err := os.OpenFile(sp.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("cdr: spool: %w", err)
	}
	w := bufio.NewWriter(f)
	n, size := 0, sp.size
	var full error
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			continue // a Record always marshals
		}
		if size+int64(len(line))+1 > sp.max {
			full = errSpoolFull
			break
		}
		w.Write(line)
		w.WriteByte('\n')
		size += int64(len(line)) + 1
		n++
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("cdr: spool: %w", err)
	}
	sp.size, sp.count = size, sp.count+n
	return n, full
}

// load reads the spooled records; a torn last line (a crash mid-append)
// is skipped.
func (sp *spool) load() ([]Record, error) {
	f, err := os.Open(sp.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cdr: spool: %w", err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.CallID != "" {
			recs = append(recs, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cdr: spool: %w", err)
	}
	return recs, nil
}

// replace makes recs the spool's whole content (none: the file goes).
func (sp *spool) replace(recs []Record) error {
	if len(recs) == 0 {
		if err := os.Remove(sp.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cdr: spool: %w", err)
		}
		sp.size, sp.count = 0, 0
		return nil
	}
	tmp := sp.path + ".tmp"
	_ = os.Remove(tmp)
	next := &spool{path: tmp, max: 1<<63 - 1}
	if _, err := next.append(recs); err != nil {
		return err
	}
	if err := os.Rename(tmp, sp.path); err != nil {
		return fmt.Errorf("cdr: spool: %w", err)
	}
	sp.size, sp.count = next.size, next.count
	return nil
}
