package connguard

import (
	"bytes"
	"errors"
	"strconv"
)

// Bounds of a SIP message on a stream: larger heads or bodies end the
// connection.
const (
	maxSIPHead = 64 << 10
	maxSIPBody = 1 << 20
)

var (
	errSIPHeadTooLarge = errors.New("SIP message head over 64 KiB")
	errSIPBadLength    = errors.New("SIP Content-Length missing or invalid")
)

// sipFramer follows message boundaries on a SIP stream (RFC 3261 18.3:
// head up to a blank line, then Content-Length bytes of body) without
// parsing messages, so a connection can be held to completing them. CRLFs
// between messages are keepalives (RFC 5626) and count as complete.
type sipFramer struct {
	head []byte // the current message's head so far
	body int    // body bytes still to come
}

// inMessage reports whether a message has begun and not yet ended.
func (f *sipFramer) inMessage() bool { return len(f.head) > 0 || f.body > 0 }

// feed consumes b and returns how many messages (or keepalives) it completed.
func (f *sipFramer) feed(b []byte) (complete int, err error) {
	for len(b) > 0 {
		if f.body > 0 {
			n := min(f.body, len(b))
			f.body -= n
			b = b[n:]
			if f.body == 0 {
				complete++
			}
			continue
		}
		if len(f.head) == 0 && (b[0] == '\r' || b[0] == '\n') {
			if b[0] == '\n' {
				complete++ // keepalive CRLF
			}
			b = b[1:]
			continue
		}
		// Search the end of the head in what we have plus b; only the last
		// 3 bytes of the head so far can start a "\r\n\r\n" that ends in b.
		start := max(0, len(f.head)-3)
		room := maxSIPHead - len(f.head)
		take := b
		if len(take) > room {
			take = take[:room]
		}
		f.head = append(f.head, take...)
		i := bytes.Index(f.head[start:], []byte("\r\n\r\n"))
		if i < 0 {
			if len(f.head) >= maxSIPHead {
				return complete, errSIPHeadTooLarge
			}
			b = b[len(take):]
			continue
		}
		end := start + i + 4
		used := end - (len(f.head) - len(take)) // bytes of b that belong to the head
		n, err := contentLength(f.head[:end])
		if err != nil {
			return complete, err
		}
		f.head = f.head[:0]
		b = b[used:]
		if n == 0 {
			complete++
		}
		f.body = n
	}
	return complete, nil
}

// contentLength reads Content-Length (or its compact form "l") from a
// message head; a stream message must have one (RFC 3261 18.3), but a
// missing one is taken as 0, as sipgo does.
func contentLength(head []byte) (int, error) {
	n, found := 0, false
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		k = bytes.TrimSpace(k)
		if !bytes.EqualFold(k, []byte("Content-Length")) && !bytes.EqualFold(k, []byte("l")) {
			continue
		}
		x, err := strconv.Atoi(string(bytes.TrimSpace(v)))
		if err != nil || x < 0 || x > maxSIPBody || (found && x != n) {
			return 0, errSIPBadLength
		}
		n, found = x, true
	}
	return n, nil
}
