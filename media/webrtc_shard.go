package media

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/stun/v4"
)

// shardBatch is how many datagrams one recvmmsg takes from a shard socket:
// the shared port carries every call, so batches fill under load.
const shardBatch = 64

// shard is one socket of the shared WebRTC port and the goroutine reading
// it. SO_REUSEPORT hashes a browser's address to one socket, so a leg's
// packets all reach the same shard, which then owns that address.
type shard struct {
	w     *WebRTC
	sock  *udpSock
	out   *udpSender   // sock's
	batch *batchReader // nil off Linux: one datagram per read
	buf   []byte       // for reads without batch

	// mu is held while a batch is processed (once per batch, not per
	// packet) so that the janitor can sweep addrs and a leg can wait
	// until no packet of its is in flight.
	mu    sync.Mutex
	addrs map[netip.AddrPort]*WebRTCLeg // ICE-verified sources

	// The media loop serving the socket, when there is one (Linux), and
	// the loop it belongs on while that loop is awake (pickLoop). place
	// guards them: a shard moves between loops as they wake and sleep.
	place  sync.Mutex
	lp     *loop
	home   *loop
	fd     int
	slot   int32
	closed bool // off placement: closed, or read by a goroutine of its own
}

// start serves the shard from media loop i, or where there are no loops
// from a goroutine of its own, counted in wg.
func (s *shard) start(i int, wg *sync.WaitGroup) {
	if s.startOnLoop(i) {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.run()
	}()
}

// close takes the socket off its loop, then closes it.
func (s *shard) close() {
	s.leaveLoop()
	_ = s.sock.close()
}

// ready is the loop's call: every datagram queued at the socket, in
// batches, under one hold of mu.
func (s *shard) ready(_ *loop, now time.Time) {
	s.mu.Lock()
	for {
		n := s.batch.take(s.fd)
		for i := range n {
			pkt, from, trunc := s.batch.at(i)
			s.handle(pkt, from, trunc, now)
		}
		if n < s.batch.size() {
			break
		}
	}
	s.mu.Unlock()
}

func newShard(w *WebRTC, sock *udpSock) *shard {
	return &shard{w: w, sock: sock, out: sock.out, batch: newShardBatch(), buf: make([]byte, readBufSize),
		addrs: map[netip.AddrPort]*WebRTCLeg{}}
}

// run reads the socket until it is closed, where no loop serves it.
func (s *shard) run() {
	conn, err := s.sock.goConn()
	if err != nil {
		s.w.log.Warn("webrtc port: no socket to read", "err", err)
		return
	}
	if s.batch != nil {
		s.batch = newBatchReaderSize(conn, shardBatch)
	}
	for {
		if s.batch == nil {
			n, _, flags, from, err := conn.ReadMsgUDPAddrPort(s.buf, nil)
			if err != nil {
				if s.stopped(err) {
					return
				}
				continue
			}
			s.mu.Lock()
			s.handle(s.buf[:n], unmap(from), flags&syscall.MSG_TRUNC != 0, time.Now())
			s.mu.Unlock()
			continue
		}
		n, err := s.batch.fill()
		if err != nil {
			if s.stopped(err) {
				return
			}
			continue
		}
		now := time.Now()
		s.mu.Lock()
		for i := range n {
			pkt, from, trunc := s.batch.at(i)
			s.handle(pkt, from, trunc, now)
		}
		s.mu.Unlock()
	}
}

func (s *shard) stopped(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	select {
	case <-s.w.done:
		return true
	default:
	}
	s.w.log.Debug("webrtc port read failed", "err", err)
	time.Sleep(10 * time.Millisecond) // don't spin on a persistent error
	return false
}

// handle demultiplexes one datagram by its first byte (RFC 7983) and, for
// media, by its ICE-verified source. It is the whole untrusted-input path
// of the shared port.
func (s *shard) handle(pkt []byte, from netip.AddrPort, truncated bool, now time.Time) {
	if truncated || len(pkt) == 0 {
		return
	}
	switch b := pkt[0]; {
	case b < 4:
		s.stun(pkt, from, now)
	case b >= 20 && b <= 63:
		if l := s.addrs[from]; l != nil {
			l.dtlsRecord(pkt)
		} else {
			s.w.strays.Add(1)
		}
	case b >= 128 && b <= 191:
		if l := s.addrs[from]; l != nil {
			l.media(pkt, now)
		} else {
			s.w.strays.Add(1)
		}
	}
}

// stun answers an ICE connectivity check on the shard's socket.
func (s *shard) stun(pkt []byte, from netip.AddrPort, now time.Time) {
	l, resp, nominated := s.w.check(pkt, from)
	if l == nil {
		return
	}
	if err := s.out.sendTo(resp, from); err != nil {
		s.w.log.Debug("webrtc: stun response failed", "to", from.String(), "err", err)
		return
	}
	if l.isClosed() {
		return
	}
	s.addrs[from] = l
	l.checked(legDest{s: s, addr: from}, nominated, now)
}

// check verifies an ICE connectivity check (RFC 8445 §7.3) from from, on
// UDP or TCP, for a leg whose username fragment and password it carries,
// and returns that leg with the success response to send. A check that
// verifies makes its source a valid pair at once: DTLS and media are
// accepted from it without waiting for nomination (RFC 8445 §12), so a
// browser that starts its handshake before nominating loses nothing. l is
// nil when the check is not one to answer.
func (w *WebRTC) check(pkt []byte, from netip.AddrPort) (l *WebRTCLeg, resp []byte, nominated bool) {
	m := &stun.Message{Raw: append([]byte(nil), pkt...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingRequest {
		return nil, nil, false
	}
	var user stun.Username
	if err := user.GetFrom(m); err != nil {
		return nil, nil, false
	}
	local, remote, ok := strings.Cut(string(user), ":")
	if !ok {
		return nil, nil, false
	}
	if l = w.legByUfrag(local); l == nil {
		return nil, nil, false
	}
	if err := stun.NewShortTermIntegrity(l.pwd).Check(m); err != nil {
		return nil, nil, false
	}
	if m.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(m); err != nil {
			return nil, nil, false
		}
	}
	if ru := l.remoteUfrag.Load(); ru != nil && *ru != remote {
		return nil, nil, false // a check from an earlier ICE session, or someone else's
	}
	r, err := stun.Build(m, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		stun.NewShortTermIntegrity(l.pwd), stun.Fingerprint)
	if err != nil {
		return nil, nil, false
	}
	return l, r.Raw, m.Contains(stun.AttrUseCandidate)
}

// sweep forgets the sources of closed legs.
func (s *shard) sweep() {
	s.mu.Lock()
	for a, l := range s.addrs {
		if l.isClosed() {
			delete(s.addrs, a)
		}
	}
	s.mu.Unlock()
}

// quiesce returns once no batch is being processed on the shard: after
// it, a handler removed before the call is no longer running.
func (s *shard) quiesce() {
	s.mu.Lock()
	//lint:ignore SA2001 an empty critical section is the point: wait for the batch in progress
	s.mu.Unlock()
}

func nilContext() context.Context { return context.Background() }
