package media

import (
	"errors"
	"net"
	"sync"
	"time"
)

// udpSock is one bound UDP socket of the media path: a SIP leg's RTP or
// RTCP port, or a shard of the shared WebRTC port.
//
// Where media loops read it (Linux), the socket is kept out of Go's
// netpoller: Go registers every socket it opens for both read and write
// readiness, edge-triggered, so each datagram the loop takes and each one
// the relay sends would also wake the runtime's poller for nothing (an
// EPOLLIN nobody waits for, an EPOLLOUT after every send). Measured at 200
// calls, those wake-ups were 40 % of the relay's context switches. The loop
// and the raw sender use fd; a goroutine that wants to block on the socket
// (ReadRTP, a DTLS handshake) asks for conn, which then joins the
// netpoller for the rest of the socket's life.
type udpSock struct {
	fd  int        // raw descriptor for loops and raw sends; -1 where there is none
	out *udpSender // every send on the socket

	mu       sync.Mutex
	conn     *net.UDPConn // Go's view of the socket; nil until asked for (Linux)
	deadline time.Time    // applied to conn when it is made
	closed   bool
}

// errSockClosed is returned by goConn after close.
var errSockClosed = errors.New("media socket closed")

// goConn returns the socket as a *net.UDPConn for a goroutine that blocks
// on it, making it on first use.
func (s *udpSock) goConn() (*net.UDPConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn, nil
	}
	if s.closed {
		return nil, net.ErrClosed
	}
	c, err := connFromFD(s.fd)
	if err != nil {
		return nil, err
	}
	if !s.deadline.IsZero() {
		_ = c.SetReadDeadline(s.deadline)
	}
	s.conn = c
	return c, nil
}

// setReadDeadline sets the read deadline of conn, now or when it is made.
func (s *udpSock) setReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline = t
	if s.conn == nil {
		return nil
	}
	return s.conn.SetReadDeadline(t)
}

// close waits for sends in flight, then closes conn and the descriptor.
// The caller has taken the socket off its loop.
func (s *udpSock) close() error {
	s.out.shut()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.conn != nil {
		err = s.conn.Close()
	}
	return errors.Join(err, closeFD(s.fd))
}
