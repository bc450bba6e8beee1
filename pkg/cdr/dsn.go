package cdr

import (
	"net/url"
	"regexp"
)

var (
	kvPassword  = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
	urlPassword = regexp.MustCompile(`(://[^:/@]*:)[^@]*@`)
)

// RedactDSN returns a PostgreSQL DSN (URL or key=value form) with any
// password replaced by "xxxxx", fit for logs and errors.
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.Opaque == "" {
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return urlPassword.ReplaceAllString(kvPassword.ReplaceAllString(dsn, "${1}xxxxx"), "${1}xxxxx@")
}
