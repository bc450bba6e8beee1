package connlimit

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestCaps: connections beyond the per-source cap are closed at accept and
// counted; closing an admitted one frees its slot.
func TestCaps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan string, 10)
	l := New(ln, "test", 10, 2, slog.New(slog.NewTextHandler(io.Discard, nil)), func(r string) { refused <- r })
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	dial()
	dial()
	first := <-accepted
	<-accepted
	extra := dial()
	if r := <-refused; r != "per_source" {
		t.Fatalf("refused for %q, want per_source", r)
	}
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the third connection from one source: read %v, want EOF", err)
	}
	_ = first.Close()
	dial()
	select {
	case <-accepted:
	case r := <-refused:
		t.Fatalf("a freed slot was not reused: refused for %s", r)
	case <-time.After(5 * time.Second):
		t.Fatal("no accept after a slot was freed")
	}
}
