// Package bencode encodes and decodes bencode, the serialisation rtpengine's
// "ng" control protocol carries over UDP.
//
// Values map to Go as follows: a byte string is a string (it may hold any
// bytes), an integer is an int64, a list is a []any and a dictionary is a
// map[string]any. The decoder is bounded: it never reads past its input,
// refuses nesting deeper than MaxDepth and never panics, whatever the bytes.
package bencode

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// MaxDepth is how deeply lists and dictionaries may nest in decoded input.
const MaxDepth = 32

// maxIntDigits bounds an integer's text; int64 needs at most 19 digits and a sign.
const maxIntDigits = 20

// ErrSyntax is wrapped by every decoding error.
var ErrSyntax = errors.New("bencode: syntax error")

// Decode parses exactly one value from b. Trailing bytes are an error.
func Decode(b []byte) (any, error) {
	d := decoder{buf: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.pos != len(b) {
		return nil, d.errorf("%d trailing bytes", len(b)-d.pos)
	}
	return v, nil
}

// DecodeDict parses b, which must hold exactly one dictionary.
func DecodeDict(b []byte) (map[string]any, error) {
	v, err := Decode(b)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: top level is %s, not a dictionary", ErrSyntax, kind(v))
	}
	return m, nil
}

type decoder struct {
	buf []byte
	pos int
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrSyntax, d.pos, fmt.Sprintf(format, args...))
}

func (d *decoder) value(depth int) (any, error) {
	if d.pos >= len(d.buf) {
		return nil, d.errorf("unexpected end of input")
	}
	c := d.buf[d.pos]
	if (c == 'l' || c == 'd') && depth >= MaxDepth {
		return nil, d.errorf("nested deeper than %d", MaxDepth)
	}
	switch {
	case c == 'i':
		d.pos++
		return d.integer('e')
	case c >= '0' && c <= '9':
		return d.str()
	case c == 'l':
		d.pos++
		list := []any{}
		for {
			if d.pos >= len(d.buf) {
				return nil, d.errorf("unterminated list")
			}
			if d.buf[d.pos] == 'e' {
				d.pos++
				return list, nil
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case c == 'd':
		d.pos++
		dict := map[string]any{}
		for {
			if d.pos >= len(d.buf) {
				return nil, d.errorf("unterminated dictionary")
			}
			if d.buf[d.pos] == 'e' {
				d.pos++
				return dict, nil
			}
			if c := d.buf[d.pos]; c < '0' || c > '9' {
				return nil, d.errorf("dictionary key is not a string")
			}
			k, err := d.str()
			if err != nil {
				return nil, err
			}
			if _, dup := dict[k]; dup {
				return nil, d.errorf("duplicate dictionary key %q", truncate(k))
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			dict[k] = v
		}
	default:
		return nil, d.errorf("unexpected byte 0x%02x", c)
	}
}

// integer reads digits up to the terminator end, with an optional minus sign.
// Leading zeros and negative zero are refused, as the format requires.
func (d *decoder) integer(end byte) (int64, error) {
	start := d.pos
	for d.pos < len(d.buf) && d.buf[d.pos] != end {
		if d.pos-start >= maxIntDigits {
			return 0, d.errorf("integer too long")
		}
		d.pos++
	}
	if d.pos >= len(d.buf) {
		return 0, d.errorf("unterminated integer")
	}
	text := string(d.buf[start:d.pos])
	d.pos++ // the terminator
	digits := text
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if digits == "" {
		return 0, d.errorf("empty integer")
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, d.errorf("bad integer %q", text)
		}
	}
	if (len(digits) > 1 && digits[0] == '0') || text == "-0" {
		return 0, d.errorf("non-canonical integer %q", text)
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, d.errorf("integer %q out of range", text)
	}
	return n, nil
}

func (d *decoder) str() (string, error) {
	n, err := d.integer(':')
	if err != nil {
		return "", err
	}
	if n < 0 {
		return "", d.errorf("negative string length")
	}
	if n > int64(len(d.buf)-d.pos) {
		return "", d.errorf("string length %d exceeds the %d bytes left", n, len(d.buf)-d.pos)
	}
	s := string(d.buf[d.pos : d.pos+int(n)])
	d.pos += int(n)
	return s, nil
}

// Marshal encodes v. It accepts string, []byte, the signed and unsigned
// integer types, bool (as 1 or 0), []any, []string, map[string]any and
// map[string]string; dictionary keys are written sorted, as bencode requires.
func Marshal(v any) ([]byte, error) {
	return Append(nil, v)
}

// Append appends the encoding of v to b; see Marshal for the accepted types.
func Append(b []byte, v any) ([]byte, error) {
	return appendValue(b, v, 0)
}

func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("bencode: value nested deeper than %d", MaxDepth)
	}
	switch x := v.(type) {
	case string:
		return appendString(b, x), nil
	case []byte:
		return appendString(b, string(x)), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case uint16:
		return appendInt(b, int64(x)), nil
	case uint32:
		return appendInt(b, int64(x)), nil
	case uint64:
		if x > 1<<63-1 {
			return nil, fmt.Errorf("bencode: integer %d out of range", x)
		}
		return appendInt(b, int64(x)), nil
	case uint:
		if uint64(x) > 1<<63-1 {
			return nil, fmt.Errorf("bencode: integer %d out of range", x)
		}
		return appendInt(b, int64(x)), nil
	case bool:
		if x {
			return appendInt(b, 1), nil
		}
		return appendInt(b, 0), nil
	case []string:
		b = append(b, 'l')
		for _, s := range x {
			b = appendString(b, s)
		}
		return append(b, 'e'), nil
	case []any:
		b = append(b, 'l')
		for _, e := range x {
			var err error
			if b, err = appendValue(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	case map[string]string:
		b = append(b, 'd')
		for _, k := range sortedKeys(x) {
			b = appendString(b, k)
			b = appendString(b, x[k])
		}
		return append(b, 'e'), nil
	case map[string]any:
		b = append(b, 'd')
		for _, k := range sortedKeys(x) {
			b = appendString(b, k)
			var err error
			if b, err = appendValue(b, x[k], depth+1); err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
		}
		return append(b, 'e'), nil
	default:
		return nil, fmt.Errorf("bencode: cannot encode %T", v)
	}
}

func appendString(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

func appendInt(b []byte, n int64) []byte {
	b = append(b, 'i')
	b = strconv.AppendInt(b, n, 10)
	return append(b, 'e')
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func kind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case []any:
		return "a list"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
