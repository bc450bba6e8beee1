package benchmarks

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// Bencode (the encoding of rtpengine's ng control protocol) has four types:
// byte strings, integers, lists and dictionaries. Here they map to string
// ([]byte also encodes), int/int64, []any and map[string]any.

// maxBencodeDepth bounds nesting so a hostile reply cannot exhaust the stack.
const maxBencodeDepth = 64

// BencodeEncode appends the bencoding of v to dst.
func BencodeEncode(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		dst = strconv.AppendInt(dst, int64(len(x)), 10)
		dst = append(dst, ':')
		return append(dst, x...), nil
	case []byte:
		dst = strconv.AppendInt(dst, int64(len(x)), 10)
		dst = append(dst, ':')
		return append(dst, x...), nil
	case int:
		return BencodeEncode(dst, int64(x))
	case int64:
		dst = append(dst, 'i')
		dst = strconv.AppendInt(dst, x, 10)
		return append(dst, 'e'), nil
	case []string:
		dst = append(dst, 'l')
		for _, e := range x {
			dst, _ = BencodeEncode(dst, e)
		}
		return append(dst, 'e'), nil
	case []any:
		dst = append(dst, 'l')
		for _, e := range x {
			var err error
			if dst, err = BencodeEncode(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, 'e'), nil
	case map[string]any:
		// Keys must be sorted as raw strings.
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		dst = append(dst, 'd')
		for _, k := range keys {
			dst, _ = BencodeEncode(dst, k)
			var err error
			if dst, err = BencodeEncode(dst, x[k]); err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
		}
		return append(dst, 'e'), nil
	default:
		return nil, fmt.Errorf("bencode: unsupported type %T", v)
	}
}

var errBencodeShort = errors.New("bencode: truncated input")

// BencodeDecode parses one bencoded value from data and returns it with the
// bytes that follow it. Byte strings decode as string.
func BencodeDecode(data []byte) (any, []byte, error) {
	return bdecode(data, 0)
}

func bdecode(data []byte, depth int) (any, []byte, error) {
	if depth > maxBencodeDepth {
		return nil, nil, errors.New("bencode: nested too deep")
	}
	if len(data) == 0 {
		return nil, nil, errBencodeShort
	}
	switch c := data[0]; {
	case c == 'i':
		end := bytes.IndexByte(data, 'e')
		if end < 0 {
			return nil, nil, errBencodeShort
		}
		n, err := strconv.ParseInt(string(data[1:end]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("bencode: integer %q: %w", truncate(data[1:end], 32), err)
		}
		return n, data[end+1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(data, ':')
		if colon < 0 || colon > 20 {
			return nil, nil, errors.New("bencode: bad string length")
		}
		n, err := strconv.ParseUint(string(data[:colon]), 10, 63)
		if err != nil {
			return nil, nil, fmt.Errorf("bencode: string length: %w", err)
		}
		rest := data[colon+1:]
		if uint64(len(rest)) < n {
			return nil, nil, errBencodeShort
		}
		return string(rest[:n]), rest[n:], nil
	case c == 'l':
		list := []any{}
		rest := data[1:]
		for {
			if len(rest) == 0 {
				return nil, nil, errBencodeShort
			}
			if rest[0] == 'e' {
				return list, rest[1:], nil
			}
			v, r, err := bdecode(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			list = append(list, v)
			rest = r
		}
	case c == 'd':
		dict := map[string]any{}
		rest := data[1:]
		for {
			if len(rest) == 0 {
				return nil, nil, errBencodeShort
			}
			if rest[0] == 'e' {
				return dict, rest[1:], nil
			}
			k, r, err := bdecode(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, nil, fmt.Errorf("bencode: dictionary key is %T, want string", k)
			}
			v, r, err := bdecode(r, depth+1)
			if err != nil {
				return nil, nil, err
			}
			dict[ks] = v
			rest = r
		}
	default:
		return nil, nil, fmt.Errorf("bencode: unexpected byte %q", c)
	}
}
