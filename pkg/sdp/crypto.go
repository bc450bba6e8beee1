package sdp

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Crypto is one RFC 4568 SDES attribute:
//
//	a=crypto:<tag> <suite> inline:<base64 key||salt>[|lifetime][|MKI:len][;inline:...] [session-params]
type Crypto struct {
	Tag   int    // 1..999999999; the answer echoes the tag it accepted
	Suite string // e.g. AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM
	Keys  []CryptoKey
	// SessionParams are kept verbatim (KDR=, UNENCRYPTED_SRTP, WSH=, ...);
	// the caller decides whether it can honour them.
	SessionParams []string
}

// CryptoKey is one inline key-param of a crypto attribute.
type CryptoKey struct {
	KeySalt  []byte // master key followed by master salt
	Lifetime uint64 // packets; 0 if absent
	MKI      uint64 // MKI value, meaningful when MKILen > 0
	MKILen   int    // MKI length in bytes on the wire (1..128); 0 if absent
}

// MKIBytes is the MKI as carried in SRTP packets: the value big-endian in
// MKILen bytes; nil without an MKI.
func (k CryptoKey) MKIBytes() []byte {
	if k.MKILen == 0 {
		return nil
	}
	b := make([]byte, k.MKILen)
	v := k.MKI
	for i := len(b) - 1; i >= 0 && v != 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

// cryptoKeySaltLen is the master key plus master salt length of the suites
// whose length we know (RFC 4568 §6.2, RFC 6188, RFC 7714 §12).
var cryptoKeySaltLen = map[string]int{
	"AES_CM_128_HMAC_SHA1_80": 16 + 14,
	"AES_CM_128_HMAC_SHA1_32": 16 + 14,
	"AES_192_CM_HMAC_SHA1_80": 24 + 14,
	"AES_192_CM_HMAC_SHA1_32": 24 + 14,
	"AES_256_CM_HMAC_SHA1_80": 32 + 14,
	"AES_256_CM_HMAC_SHA1_32": 32 + 14,
	"AEAD_AES_128_GCM":        16 + 12,
	"AEAD_AES_256_GCM":        32 + 12,
}

// CryptoKeySaltLen returns the master key||salt length of a suite, false if
// the suite is unknown.
func CryptoKeySaltLen(suite string) (int, bool) {
	n, ok := cryptoKeySaltLen[suite]
	return n, ok
}

// ErrCrypto is wrapped by every ParseCrypto error.
var ErrCrypto = errors.New("bad a=crypto attribute")

func cryptoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCrypto}, args...)...)
}

// ParseCrypto parses the value of an a=crypto attribute, with or without
// the leading "a=crypto:" or "crypto:". Keys of a known suite must have its
// length; an unknown suite parses (so an answerer can skip it) with keys of
// any length.
func ParseCrypto(s string) (Crypto, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "a=")
	s = strings.TrimPrefix(s, "crypto:")
	f := strings.Fields(s)
	if len(f) < 3 {
		return Crypto{}, cryptoErr("want <tag> <suite> <key-params>, got %d fields", len(f))
	}
	var c Crypto
	if len(f[0]) > 9 || !allDigits(f[0]) {
		return Crypto{}, cryptoErr("tag %q", f[0])
	}
	c.Tag, _ = strconv.Atoi(f[0])
	if !isToken(f[1]) {
		return Crypto{}, cryptoErr("suite %q", f[1])
	}
	c.Suite = f[1]
	want, known := cryptoKeySaltLen[c.Suite]
	for _, kp := range strings.Split(f[2], ";") {
		k, err := parseKeyParam(kp)
		if err != nil {
			return Crypto{}, err
		}
		if known && len(k.KeySalt) != want {
			return Crypto{}, cryptoErr("%s key||salt is %d bytes, want %d", c.Suite, len(k.KeySalt), want)
		}
		c.Keys = append(c.Keys, k)
	}
	// With several keys, each needs an MKI to tell them apart (§6.1).
	if len(c.Keys) > 1 {
		for _, k := range c.Keys {
			if k.MKILen == 0 {
				return Crypto{}, cryptoErr("several keys without MKI")
			}
		}
	}
	c.SessionParams = f[3:]
	return c, nil
}

func parseKeyParam(kp string) (CryptoKey, error) {
	var k CryptoKey
	info, ok := strings.CutPrefix(kp, "inline:")
	if !ok {
		return k, cryptoErr("key method in %q is not inline", kp)
	}
	parts := strings.Split(info, "|")
	if len(parts) > 3 {
		return k, cryptoErr("too many '|' fields in key-info")
	}
	var err error
	if k.KeySalt, err = decodeKey(parts[0]); err != nil {
		return k, err
	}
	for _, p := range parts[1:] {
		if mv, ml, ok := strings.Cut(p, ":"); ok {
			if k.MKILen != 0 {
				return k, cryptoErr("two MKIs")
			}
			if k.MKI, k.MKILen, err = parseMKI(mv, ml); err != nil {
				return k, err
			}
			continue
		}
		if k.Lifetime != 0 || k.MKILen != 0 { // lifetime comes before MKI
			return k, cryptoErr("misplaced lifetime %q", p)
		}
		if k.Lifetime, err = parseLifetime(p); err != nil {
			return k, err
		}
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, cryptoErr("empty key")
	}
	// RFC 4568 says base64 (RFC 3548) with padding; some endpoints leave
	// the padding off.
	if b, err := base64.StdEncoding.Strict().DecodeString(s); err == nil {
		return b, nil
	}
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, cryptoErr("key is not base64")
	}
	return b, nil
}

func parseLifetime(s string) (uint64, error) {
	if e, ok := strings.CutPrefix(s, "2^"); ok {
		n, err := strconv.ParseUint(e, 10, 8)
		if err != nil || !allDigits(e) || n == 0 || n > 63 {
			return 0, cryptoErr("lifetime %q", s)
		}
		return 1 << n, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || !allDigits(s) || n == 0 {
		return 0, cryptoErr("lifetime %q", s)
	}
	return n, nil
}

func parseMKI(value, length string) (uint64, int, error) {
	l, err := strconv.Atoi(length)
	if err != nil || !allDigits(length) || len(length) > 3 || l < 1 || l > 128 {
		return 0, 0, cryptoErr("MKI length %q", length)
	}
	v, err := strconv.ParseUint(value, 10, 64)
	if err != nil || !allDigits(value) {
		return 0, 0, cryptoErr("MKI value %q", value)
	}
	if l < 8 && v >= 1<<(8*l) {
		return 0, 0, cryptoErr("MKI %d does not fit %d bytes", v, l)
	}
	return v, l, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isToken accepts the RFC 4566 token characters a suite name uses.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// String formats the attribute value (what follows "a=crypto:").
func (c Crypto) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.Tag))
	b.WriteByte(' ')
	b.WriteString(c.Suite)
	b.WriteByte(' ')
	for i, k := range c.Keys {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString("inline:")
		b.WriteString(base64.StdEncoding.EncodeToString(k.KeySalt))
		if k.Lifetime != 0 {
			b.WriteByte('|')
			if k.Lifetime > 1 && bits.OnesCount64(k.Lifetime) == 1 {
				b.WriteString("2^")
				b.WriteString(strconv.Itoa(bits.TrailingZeros64(k.Lifetime)))
			} else {
				b.WriteString(strconv.FormatUint(k.Lifetime, 10))
			}
		}
		if k.MKILen != 0 {
			b.WriteByte('|')
			b.WriteString(strconv.FormatUint(k.MKI, 10))
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(k.MKILen))
		}
	}
	for _, p := range c.SessionParams {
		b.WriteByte(' ')
		b.WriteString(p)
	}
	return b.String()
}

// String keeps key material out of logs and %v; Crypto.String, which
// formats the attribute for the SDP, is the only place the key is printed.
func (k CryptoKey) String() string {
	return fmt.Sprintf("{KeySalt: <%d bytes>, Lifetime: %d, MKI: %d, MKILen: %d}", len(k.KeySalt), k.Lifetime, k.MKI, k.MKILen)
}

// GoString keeps key material out of %#v and debug dumps.
func (k CryptoKey) GoString() string { return "sdp.CryptoKey" + k.String() }

// Equal reports whether two attributes are the same, keys included.
func (c Crypto) Equal(o Crypto) bool {
	if c.Tag != o.Tag || c.Suite != o.Suite || len(c.Keys) != len(o.Keys) || len(c.SessionParams) != len(o.SessionParams) {
		return false
	}
	for i := range c.Keys {
		a, b := c.Keys[i], o.Keys[i]
		if !bytes.Equal(a.KeySalt, b.KeySalt) || a.Lifetime != b.Lifetime || a.MKI != b.MKI || a.MKILen != b.MKILen {
			return false
		}
	}
	for i := range c.SessionParams {
		if c.SessionParams[i] != o.SessionParams[i] {
			return false
		}
	}
	return true
}

// GenerateCrypto returns an attribute with a fresh random key (crypto/rand)
// for one of the known suites.
func GenerateCrypto(tag int, suite string) (Crypto, error) {
	n, ok := cryptoKeySaltLen[suite]
	if !ok {
		return Crypto{}, fmt.Errorf("generate crypto: unknown suite %q", suite)
	}
	if tag < 0 || tag > 999999999 {
		return Crypto{}, fmt.Errorf("generate crypto: tag %d out of range", tag)
	}
	key := make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		return Crypto{}, fmt.Errorf("generate crypto: %w", err)
	}
	return Crypto{Tag: tag, Suite: suite, Keys: []CryptoKey{{KeySalt: key}}}, nil
}
