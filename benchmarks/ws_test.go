package benchmarks

import (
	"strings"
	"testing"
)

func TestPadHead(t *testing.T) {
	for _, h := range []string{"GET / HTTP/1.1\r\n", strings.Repeat("a", 500) + "\r\n", strings.Repeat("b", 1017) + "\r\n"} {
		got := padHead(h) + "\r\n"
		n := len(got)
		if n&(n-1) != 0 || !strings.HasSuffix(got, "\r\n\r\n") {
			t.Errorf("padded head of %d bytes is %d bytes", len(h), n)
		}
	}
}
