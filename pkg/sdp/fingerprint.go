package sdp

import (
	"errors"
	"fmt"
	"strings"
)

// ErrFingerprint is wrapped by every ParseFingerprint error.
var ErrFingerprint = errors.New("bad a=fingerprint attribute")

// fingerprintLen is the digest length in bytes of the hashes RFC 8122 names
// that the relay can check.
var fingerprintLen = map[string]int{"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}

// ParseFingerprint parses an a=fingerprint value (RFC 8122 §5), with or
// without "a=fingerprint:", into the hash name (lower case) and the digest
// as upper-case colon-separated hex.
func ParseFingerprint(s string) (hash, value string, err error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "a=")
	s = strings.TrimPrefix(s, "fingerprint:")
	f := strings.Fields(s)
	if len(f) != 2 {
		return "", "", fmt.Errorf("%w: want <hash> <digest>, got %d fields", ErrFingerprint, len(f))
	}
	hash = strings.ToLower(f[0])
	n, ok := fingerprintLen[hash]
	if !ok {
		return "", "", fmt.Errorf("%w: hash %q", ErrFingerprint, f[0])
	}
	parts := strings.Split(f[1], ":")
	if len(parts) != n {
		return "", "", fmt.Errorf("%w: %s digest has %d bytes, want %d", ErrFingerprint, hash, len(parts), n)
	}
	for _, p := range parts {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return "", "", fmt.Errorf("%w: digest byte %q", ErrFingerprint, p)
		}
	}
	return hash, strings.ToUpper(f[1]), nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// Setup roles of a=setup (RFC 4145 §4).
const (
	SetupActive   = "active"
	SetupPassive  = "passive"
	SetupActPass  = "actpass"
	SetupHoldConn = "holdconn"
)

// ErrSetup is returned by ParseSetup for an unknown role.
var ErrSetup = errors.New("bad a=setup attribute")

// ParseSetup parses an a=setup value, with or without "a=setup:".
func ParseSetup(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "a=")
	s = strings.TrimPrefix(s, "setup:")
	switch r := strings.ToLower(strings.TrimSpace(s)); r {
	case SetupActive, SetupPassive, SetupActPass, SetupHoldConn:
		return r, nil
	}
	return "", fmt.Errorf("%w: %q", ErrSetup, s)
}
