package wsdemux

import (
	"testing"
)

func TestOriginAllowed(t *testing.T) {
	allowed := []string{"https://app.example.com"}
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nUpgrade: websocket", true},                            // no Origin: not a browser
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://relay:8080", true},                     // its own page
		{"GET /ws HTTP/1.1\r\nHost: RELAY\r\nOrigin: http://relay:80/", true},                           // default port, case
		{"GET /ws HTTP/1.1\r\nHost: relay\r\nOrigin: https://relay", true},                              // https default port
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://evil.example", false},                  // foreign page
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://relay:8081", false},                    // other port
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: null", false},                                 // sandboxed page
		{"GET /ws HTTP/1.1\r\nOrigin: http://relay:8080", false},                                        // no Host to compare
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: https://app.example.com", true},               // listed
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: https://APP.example.com/", true},              // listed, case
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://app.example.com", false},               // listed with https only
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: https://app.example.com.evil.example", false}, // suffix trick
		{"GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: ftp://relay:8080", false},                     // not a web origin
	} {
		if _, got := originAllowed([]byte(tc.head), allowed); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.head, got, tc.want)
		}
	}
	if _, ok := originAllowed([]byte("GET /ws HTTP/1.1\r\nHost: a\r\nOrigin: http://b"), []string{"*"}); !ok {
		t.Error(`"*" does not allow any origin`)
	}
}

func FuzzOriginAllowed(f *testing.F) {
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: relay:8080\r\nOrigin: http://relay:8080"), "https://app.example.com")
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: [::1]:80\r\nOrigin: http://[::1]"), "*")
	f.Add([]byte("GET /ws HTTP/1.1\r\nOrigin: %zz\r\nHost: :"), "")
	f.Fuzz(func(t *testing.T, head []byte, allowed string) {
		origin, ok := originAllowed(head, []string{allowed})
		if _, has := headerValue(head, "Origin"); !has && (!ok || origin != "") {
			t.Fatalf("no Origin header but allowed=%v origin=%q", ok, origin)
		}
	})
}
