package benchmarks

import (
	"reflect"
	"testing"
)

func TestBencodeRoundTrip(t *testing.T) {
	v := map[string]any{
		"command": "offer",
		"call-id": "abc",
		"flags":   []any{"trust-address", "generate-mid"},
		"num":     int64(-42),
		"nested":  map[string]any{"a": []any{int64(1), "x"}},
	}
	b, err := BencodeEncode(nil, v)
	if err != nil {
		t.Fatal(err)
	}
	want := "d7:call-id3:abc7:command5:offer5:flagsl13:trust-address12:generate-mide6:nestedd1:ali1e1:xee3:numi-42ee"
	if string(b) != want {
		t.Fatalf("encoded %s\nwant    %s", b, want)
	}
	got, rest, err := BencodeDecode(b)
	if err != nil || len(rest) != 0 {
		t.Fatalf("decode: %v rest %q", err, rest)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip: %#v", got)
	}
}

func TestBencodeDecodeErrors(t *testing.T) {
	for _, s := range []string{"", "i12", "5:abc", "l", "d1:a", "di1ei2ee", "x", "99999999999999999999999:a", "ie", "-1:a"} {
		if _, _, err := BencodeDecode([]byte(s)); err == nil {
			t.Errorf("decode %q: want error", s)
		}
	}
}

// FuzzBencodeDecode checks that hostile ng replies never panic and that
// whatever decodes re-encodes to something that decodes to the same value.
func FuzzBencodeDecode(f *testing.F) {
	for _, s := range []string{"d6:result2:ok3:sdp3:v=0e", "li1e3:abce", "i-0e", "de", "le", "0:"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, _, err := BencodeDecode(data)
		if err != nil {
			return
		}
		b, err := BencodeEncode(nil, v)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", v, err)
		}
		v2, rest, err := BencodeDecode(b)
		if err != nil || len(rest) != 0 || !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-decode of %q: %v %#v", b, err, v2)
		}
	})
}
