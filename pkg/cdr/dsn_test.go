package cdr

import (
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://billing:hunter2@db.example:5432/cdr?sslmode=require",
		"postgresql://billing:hunter2@db.example/cdr",
		"postgres://billing@db.example/cdr?password=hunter2&sslmode=disable",
		"host=db.example user=billing password=hunter2 dbname=cdr",
		"host=db.example user=billing password = 'hunter2 with spaces' dbname=cdr",
		"host=db.example PASSWORD=hunter2",
		"postgres://billing:hunter2@db.example:bad port/cdr",
	} {
		got := RedactDSN(dsn)
		if strings.Contains(got, "hunter2") {
			t.Errorf("RedactDSN(%q) = %q: the password is still there", dsn, got)
		}
		if !strings.Contains(got, "db.example") {
			t.Errorf("RedactDSN(%q) = %q: the host is gone", dsn, got)
		}
	}
	if got := RedactDSN("host=/tmp/x dbname=cdr"); got != "host=/tmp/x dbname=cdr" {
		t.Errorf("a DSN without password changed: %q", got)
	}
}

func TestOpenPostgresBadDSNNotEchoed(t *testing.T) {
	_, err := OpenPostgres("postgres://u:hunter2@h:notaport/db", Options{Log: quiet})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v", err)
	}
}
