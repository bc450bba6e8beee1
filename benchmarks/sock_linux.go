//go:build linux

package benchmarks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSock is one call's UDP socket on 127.0.0.1, used through its raw
// descriptor: the shard's epoll set says when it is readable, so no
// goroutine parks on it, and the per-packet syscalls allocate nothing.
type udpSock struct {
	fd   int
	port int
	// recvmsg's header, source address, buffer vector and control
	// buffer, reused for every read: only the shard's goroutine reads.
	msg unix.Msghdr
	rsa unix.RawSockaddrInet4
	iov unix.Iovec
	oob [64]byte
}

// openUDPSock binds a non-blocking UDP socket to 127.0.0.1 on a port the
// kernel picks: a call's own local port, as a browser's is.
func openUDPSock() (*udpSock, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp bind 127.0.0.1: %w", err)
	}
	// The kernel stamps each datagram's arrival, so a reply read on the
	// next tick rather than at once is still timed to the nanosecond.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp SO_TIMESTAMPNS: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp getsockname: %w", err)
	}
	sa4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		unix.Close(fd)
		return nil, errors.New("udp getsockname: not IPv4")
	}
	return &udpSock{fd: fd, port: sa4.Port}, nil
}

func sockaddr(to netip.AddrPort) (*unix.SockaddrInet4, error) {
	if !to.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("%s: only IPv4 peers are supported", to)
	}
	return &unix.SockaddrInet4{Addr: to.Addr().Unmap().As4(), Port: int(to.Port())}, nil
}

// sendTo sends one datagram to an address (STUN and DTLS, before the pair
// is chosen and the socket connected).
func (s *udpSock) sendTo(b []byte, to netip.AddrPort) error {
	sa, err := sockaddr(to)
	if err != nil {
		return err
	}
	if err := unix.Sendto(s.fd, b, 0, sa); err != nil {
		return fmt.Errorf("sendto %s: %w", to, err)
	}
	return nil
}

// connect fixes the peer: the kernel then routes sends once, not per
// packet, and drops datagrams from anyone else.
func (s *udpSock) connect(to netip.AddrPort) error {
	sa, err := sockaddr(to)
	if err != nil {
		return err
	}
	if err := unix.Connect(s.fd, sa); err != nil {
		return fmt.Errorf("connect %s: %w", to, err)
	}
	return nil
}

// send writes one datagram on a connected socket; it allocates nothing.
func (s *udpSock) send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(s.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b))); e != 0 {
		return e
	}
	return nil
}

// recv reads one datagram without blocking. ok is false when there was
// none, or it was truncated, or the read failed; a failed read is not
// worth more than a dropped packet to a load client. at is the kernel's
// arrival stamp (Unix ns, wall clock), 0 if it gave none.
func (s *udpSock) recv(b []byte) (n int, from netip.AddrPort, at int64, ok bool) {
	s.iov.Base = &b[0]
	s.iov.SetLen(len(b))
	s.msg.Name = (*byte)(unsafe.Pointer(&s.rsa))
	s.msg.Namelen = unix.SizeofSockaddrInet4
	s.msg.Iov = &s.iov
	s.msg.SetIovlen(1)
	s.msg.Control = &s.oob[0]
	s.msg.SetControllen(len(s.oob))
	s.msg.Flags = 0
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msg)), unix.MSG_DONTWAIT)
	if e != 0 || s.msg.Flags&unix.MSG_TRUNC != 0 || s.rsa.Family != unix.AF_INET {
		return 0, netip.AddrPort{}, 0, false
	}
	p := (*[2]byte)(unsafe.Pointer(&s.rsa.Port))
	from = netip.AddrPortFrom(netip.AddrFrom4(s.rsa.Addr), uint16(p[0])<<8|uint16(p[1]))
	return int(r), from, s.stamp(), true
}

// stamp finds SCM_TIMESTAMPNS in the last recvmsg's control data.
func (s *udpSock) stamp() int64 { return cmsgStamp(s.oob[:s.msg.Controllen]) }

// cmsgStamp finds SCM_TIMESTAMPNS in recvmsg's control data: the arrival
// (Unix ns, wall clock), 0 if there is none.
func cmsgStamp(oob []byte) int64 {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if int(h.Len) < unix.CmsgLen(0) || int(h.Len) > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && int(h.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return ts.Nano()
		}
		if sp := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0)); sp < len(oob) {
			oob = oob[sp:]
		} else {
			break
		}
	}
	return 0
}

func (s *udpSock) close() error { return unix.Close(s.fd) }

func (s *udpSock) fdNum() int { return s.fd }

// poller is a shard's two epoll sets. The shard blocks on the first: its
// 20 ms timer and the sockets of calls being set up, whose handshakes
// should not wait. The sockets of calls carrying media are in the second,
// which the shard only polls, on each tick: their packets wait in the
// socket buffers for at most a tick (the kernel stamps their arrival), and
// the shard is woken 50 times a second, not once per few packets.
//
// The shard waits for the first set in Go's netpoller, as the relay's media
// loops do, not in a blocking epoll_wait, and every syscall a tick makes
// (this poller's, and the sockets' reads and writes) is raw: none can
// block (non-blocking descriptors, zero timeouts). Between two ticks every
// P is idle and sysmon sleeps deeply; the next Syscall wakes it into 20 µs
// polling, which was 15 % of the load generator's CPU.
type poller struct {
	ep     int
	epFile *os.File        // ep in the netpoller
	epConn syscall.RawConn // waits on epFile
	waitFn func(uintptr) bool
	found  int // what the last waitFn took
	quiet  int
	timer  int // timerfd, periodic: the send tick
	events []unix.EpollEvent
	qev    []unix.EpollEvent
	tbuf   [8]byte // the timer's expiry count
}

func newPoller(tick time.Duration) (*poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// A timerfd rather than epoll_wait's millisecond timeout: the tick
	// is kept to the kernel's hrtimer precision, so the load client adds
	// no jitter of its own to the stream the relay receives.
	quiet, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		unix.Close(quiet)
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	p := &poller{ep: ep, quiet: quiet, timer: tfd, events: make([]unix.EpollEvent, 128), qev: make([]unix.EpollEvent, 256)}
	// Non-blocking, so that os.NewFile puts it in the netpoller.
	if err := unix.SetNonblock(ep, true); err != nil {
		p.close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p.epFile = os.NewFile(uintptr(ep), "bench-epoll")
	if p.epConn, err = p.epFile.SyscallConn(); err != nil {
		p.close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p.waitFn = p.take
	if err := p.add(tfd); err != nil {
		p.close()
		return nil, err
	}
	ts := unix.NsecToTimespec(int64(tick))
	if err := unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		p.close()
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	return p, nil
}

func (p *poller) add(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add fd %d: %w", fd, err)
	}
	return nil
}

// del forgets fd in whichever set holds it.
func (p *poller) del(fd int) {
	_ = unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil)
	_ = unix.EpollCtl(p.quiet, unix.EPOLL_CTL_DEL, fd, nil)
}

// hush moves fd from the blocking set to the polled one.
func (p *poller) hush(fd int) error {
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("epoll del fd %d: %w", fd, err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(p.quiet, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add fd %d: %w", fd, err)
	}
	return nil
}

// pollQuiet returns how many sockets of the polled set are readable now;
// quietFD(i) is the i-th.
func (p *poller) pollQuiet() int {
	n, e := epollNow(uintptr(p.quiet), p.qev)
	if e != 0 {
		return 0
	}
	return n
}

// epollNow is a non-blocking epoll_wait on epfd into events.
func epollNow(epfd uintptr, events []unix.EpollEvent) (int, syscall.Errno) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), e
}

func (p *poller) quietFD(i int) int { return int(p.qev[i].Fd) }

// wait parks until the first set has something ready and returns how many
// descriptors are; readyFD(i) is the i-th. 0 means the set is closed or
// broken: the caller checks why before it waits again.
func (p *poller) wait() int {
	p.found = 0
	if err := p.epConn.Read(p.waitFn); err != nil {
		return 0
	}
	return p.found
}

// take is wait's non-blocking epoll_wait; false parks the caller in the
// netpoller until the set is readable.
func (p *poller) take(fd uintptr) bool {
	n, e := epollNow(fd, p.events)
	switch {
	case e == 0 && n > 0:
		p.found = n
		return true
	case e == 0, e == unix.EINTR, e == unix.EAGAIN:
		return false
	default:
		return true // found stays 0
	}
}

func (p *poller) readyFD(i int) int { return int(p.events[i].Fd) }

func (p *poller) isTimer(fd int) bool { return fd == p.timer }

// ticks reads the timer's expiry count (0 if it has not fired), which
// also re-arms its readiness.
func (p *poller) ticks() uint64 {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(p.timer), uintptr(unsafe.Pointer(&p.tbuf[0])), uintptr(len(p.tbuf)))
	if e != 0 || n != 8 {
		return 0
	}
	return *(*uint64)(unsafe.Pointer(&p.tbuf[0]))
}

func (p *poller) close() {
	unix.Close(p.timer)
	unix.Close(p.quiet)
	if p.epFile != nil {
		_ = p.epFile.Close()
	} else {
		unix.Close(p.ep)
	}
}

// gettid is the calling thread's id, for its CPU time in /proc.
func gettid() int { return unix.Gettid() }

// tcpSock is one call's ICE-TCP connection (RFC 6544): the active end,
// connected to the relay's passive candidate, used through its raw
// non-blocking descriptor so it sits in the shard's epoll set exactly as
// a UDP socket does: no goroutine reads it. Every packet travels as an
// RFC 4571 frame, a 16-bit length before it, both ways.
type tcpSock struct {
	fd     int
	port   int            // ours
	remote netip.AddrPort // the relay's passive candidate

	// rbuf[:rn] is the frame being read, length first; at is the newest
	// arrival stamp among its reads. Only the shard's goroutine reads.
	rbuf []byte
	rn   int
	at   int64
	msg  unix.Msghdr
	iov  unix.Iovec
	oob  [64]byte

	// wbuf builds one frame; pending is the unsent tail of a frame the
	// kernel took only part of, finished before anything else is sent so
	// that the stream's framing stays intact. Writers hold the shard's mu.
	wbuf    []byte
	pending []byte
	dropped uint64 // frames not sent because the connection was backed up
}

// tcpMaxFrame bounds one framed packet, as the relay bounds it: media and
// DTLS flights fit with room to spare.
const tcpMaxFrame = 4096

var (
	errFrameLen  = errors.New("ice-tcp: bad RFC 4571 frame length")
	errTCPClosed = errors.New("ice-tcp: connection closed by the peer")
)

// dialTCP opens an ICE-TCP connection from 127.0.0.1 to the relay's
// passive candidate. The connect itself is non-blocking and waited for in
// short polls, so the call's context bounds it (a full accept backlog
// makes the kernel retry the SYN after a second).
func dialTCP(ctx context.Context, to netip.AddrPort) (*tcpSock, error) {
	sa, err := sockaddr(to)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tcp socket: %w", err)
	}
	s := &tcpSock{fd: fd, remote: to}
	fail := func(what string, err error) (*tcpSock, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("ice-tcp %s %s: %w", what, to, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fail("bind 127.0.0.1 for", err)
	}
	// Media frames are small and timed: Nagle would hold one back until
	// the previous was acknowledged. Browsers set it too.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fail("TCP_NODELAY to", err)
	}
	// As on UDP: the kernel stamps arrivals, so a frame read on the next
	// tick is still timed as it arrived.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS to", err)
	}
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fail("connect", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		if err := ctx.Err(); err != nil {
			return fail("connect", err)
		}
		n, err := unix.Poll(pfd, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fail("connect (poll)", err)
		}
		if n > 0 {
			break
		}
	}
	if soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
		return fail("connect", err)
	} else if soErr != 0 {
		return fail("connect", unix.Errno(soErr))
	}
	la, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname after connecting", err)
	}
	if la4, ok := la.(*unix.SockaddrInet4); ok {
		s.port = la4.Port
	}
	s.rbuf = make([]byte, 2+tcpMaxFrame)
	s.wbuf = make([]byte, 2+tcpMaxFrame)
	s.pending = make([]byte, 0, 2+tcpMaxFrame)
	return s, nil
}

// send writes b as one RFC 4571 frame without blocking; it allocates
// nothing. A frame the kernel cannot take at all, or one that would have
// to wait behind an unfinished one, is dropped and counted, as a full UDP
// buffer would drop a datagram: the load client must not stall.
func (s *tcpSock) send(b []byte) error {
	if len(b) > tcpMaxFrame {
		return errFrameLen
	}
	if len(s.pending) > 0 {
		n, err := s.write(s.pending)
		if err != nil {
			return err
		}
		s.pending = s.pending[:copy(s.pending, s.pending[n:])]
		if len(s.pending) > 0 {
			s.dropped++
			return nil
		}
	}
	frame := s.wbuf[:2+len(b)]
	binary.BigEndian.PutUint16(frame, uint16(len(b)))
	copy(frame[2:], b)
	n, err := s.write(frame)
	switch {
	case err != nil:
		return err
	case n == 0:
		s.dropped++
	case n < len(frame):
		s.pending = append(s.pending[:0], frame[n:]...)
	}
	return nil
}

// write is one non-blocking send; a full buffer is not an error, and a
// peer that went away gives EPIPE rather than a signal.
func (s *tcpSock) write(b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	switch e {
	case 0:
		return int(r), nil
	case unix.EAGAIN:
		return 0, nil
	}
	return 0, e
}

// recvFrame reads the next RFC 4571 frame, without blocking, one frame
// per call: nil (and no error) while it has not all arrived; what has is
// kept for the next call. The frame stays valid until then. at is the
// kernel's arrival stamp of its last bytes (Unix ns, wall clock; 0 if
// none). It returns errTCPClosed when the peer has closed.
//
// It reads the 2-byte length, then exactly the body, rather than all the
// connection holds: a read spanning several frames carries one stamp,
// the newest segment's, and would time a frame that waited for the tick
// as if it had just arrived.
func (s *tcpSock) recvFrame() (frame []byte, at int64, err error) {
	for {
		want := 2
		if s.rn >= 2 {
			l := int(binary.BigEndian.Uint16(s.rbuf))
			if l == 0 || l > tcpMaxFrame {
				return nil, 0, errFrameLen
			}
			want = 2 + l
			if s.rn == want {
				s.rn = 0
				return s.rbuf[2:want], s.at, nil
			}
		}
		n, at, err := s.recv(s.rbuf[s.rn:want])
		if err != nil || n == 0 {
			return nil, 0, err
		}
		if at != 0 {
			s.at = at
		}
		s.rn += n
	}
}

// recv is one non-blocking recvmsg into b: 0 bytes and no error when
// there is nothing to read.
func (s *tcpSock) recv(b []byte) (n int, at int64, err error) {
	s.iov.Base = &b[0]
	s.iov.SetLen(len(b))
	s.msg.Iov = &s.iov
	s.msg.SetIovlen(1)
	s.msg.Control = &s.oob[0]
	s.msg.SetControllen(len(s.oob))
	s.msg.Flags = 0
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msg)), unix.MSG_DONTWAIT)
	switch {
	case e == unix.EAGAIN:
		return 0, 0, nil
	case e != 0:
		return 0, 0, e
	case r == 0:
		return 0, 0, errTCPClosed
	}
	return int(r), cmsgStamp(s.oob[:s.msg.Controllen]), nil
}

func (s *tcpSock) close() error { return unix.Close(s.fd) }

func (s *tcpSock) fdNum() int { return s.fd }
