package bencode

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		in   any
		want string
	}{
		{"", "0:"},
		{"spam", "4:spam"},
		{"\x00\xff", "2:\x00\xff"},
		{int64(0), "i0e"},
		{int64(-42), "i-42e"},
		{int64(1<<63 - 1), "i9223372036854775807e"},
		{int64(-1 << 63), "i-9223372036854775808e"},
		{[]any{}, "le"},
		{map[string]any{}, "de"},
		{[]any{"a", int64(1), []any{"b"}}, "l1:ai1el1:bee"},
		{map[string]any{"result": "pong", "b": map[string]any{"x": []any{}}}, "d1:bd1:xlee6:result4:ponge"},
	}
	for _, c := range cases {
		got, err := Marshal(c.in)
		if err != nil {
			t.Fatalf("Marshal(%#v): %v", c.in, err)
		}
		if string(got) != c.want {
			t.Errorf("Marshal(%#v) = %q, want %q", c.in, got, c.want)
		}
		back, err := Decode(got)
		if err != nil {
			t.Fatalf("Decode(%q): %v", got, err)
		}
		if !reflect.DeepEqual(back, c.in) {
			t.Errorf("Decode(%q) = %#v, want %#v", got, back, c.in)
		}
	}
}

func TestMarshalTypes(t *testing.T) {
	got, err := Marshal(map[string]any{"n": 3, "u": uint64(7), "t": true, "l": []string{"x"}, "m": map[string]string{"k": "v"}, "y": []byte("z")})
	if err != nil {
		t.Fatal(err)
	}
	if want := "d1:ll1:xe1:md1:k1:ve1:ni3e1:ti1e1:ui7e1:y1:ze"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := Marshal(map[string]any{"f": 1.5}); err == nil {
		t.Error("a float encoded")
	}
	if _, err := Marshal(uint64(1 << 63)); err == nil {
		t.Error("uint64 above int64 encoded")
	}
}

// An ng request as Kamailio's rtpengine module sends it: keys not sorted.
func TestDecodeUnsortedKeys(t *testing.T) {
	m, err := DecodeDict([]byte("d7:command4:ping5:flagsl5:trustee"))
	if err != nil {
		t.Fatal(err)
	}
	if m["command"] != "ping" || !reflect.DeepEqual(m["flags"], []any{"trust"}) {
		t.Errorf("got %#v", m)
	}
}

func TestDecodeRejects(t *testing.T) {
	bad := []string{
		"", "i", "ie", "i-e", "i01e", "i-0e", "i1x2e", "i99999999999999999999e", "i123",
		"5:abc", "-1:a", "01:a", "1a", "l", "li1e", "d", "d1:a", "di1ei2ee", "d1:ai1e1:ai2ee",
		"x", "i1ei2e", "4:spamX", "9999999999999999999999:a",
		strings.Repeat("l", MaxDepth+1) + strings.Repeat("e", MaxDepth+1),
	}
	for _, s := range bad {
		v, err := Decode([]byte(s))
		if err == nil {
			t.Errorf("Decode(%q) = %#v, want an error", s, v)
			continue
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Decode(%q) error %v does not wrap ErrSyntax", s, err)
		}
	}
	if _, err := DecodeDict([]byte("le")); err == nil {
		t.Error("DecodeDict accepted a list")
	}
	// Exactly MaxDepth levels are fine.
	deep := strings.Repeat("l", MaxDepth) + strings.Repeat("e", MaxDepth)
	if _, err := Decode([]byte(deep)); err != nil {
		t.Errorf("depth %d: %v", MaxDepth, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"d7:command4:pinge", "d3:sdp10:v=0\r\no=- 14:flagsl5:trustee", "li1ei-2e0:de",
		"d1:ad1:bd1:cleeee", "i9223372036854775807e", "4:spam",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := Marshal(v)
		if err != nil {
			t.Fatalf("decoded %q but cannot re-encode: %v", b, err)
		}
		v2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoding of %q does not decode: %v", b, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip of %q changed the value", b)
		}
		// Canonical input (sorted keys) re-encodes to the same bytes.
		enc2, _ := Marshal(v2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable for %q", b)
		}
	})
}
