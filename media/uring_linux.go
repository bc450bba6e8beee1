//go:build linux

package media

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mediarelay/mediarelay/pkg/uring"
)

// An outbox sends the datagrams a media loop produces in one round with
// one io_uring_enter instead of one sendto each. On the 2-vCPU guests we
// measure on, entering the kernel costs about 1.4 µs before any work is
// done (a getppid loop), a quarter of a loopback sendto; a round sends to
// many sockets (each SIP leg has its own), which sendmmsg cannot batch.
//
// Only the loop's own goroutine queues and flushes. Each send is issued
// inline during io_uring_enter with MSG_DONTWAIT, so the kernel never
// retries it later from our buffers: a full socket buffer fails the send
// (-EAGAIN), as a non-blocking sendto would. flush also waits for every
// completion before the buffers are reused, whatever the kernel did.

const (
	outboxSlots = 64 // datagrams per io_uring_enter; more are sent in another
	inboxSlots  = 64 // sockets read per io_uring_enter
	recvTag     = 1 << 32

	// fixedFiles is how many of a loop's sockets get a slot in its ring's
	// file table, where the kernel finds them without a descriptor
	// lookup per entry (fget was 1.4–1.8 % of the relay's CPU). Sockets
	// beyond it are named by descriptor, as without a table.
	fixedFiles = 4096
	// maxFixedFD bounds the descriptor-to-slot table.
	maxFixedFD = 1 << 20
)

// outbox is one loop's ring and the buffers of the sends it holds.
type outbox struct {
	ring *uring.Ring
	done func(userData uint64, res int32) // o.complete, made once: no allocation per round

	n     int // datagrams queued
	from  [outboxSlots]*udpSender
	hdrs  [outboxSlots]unix.Msghdr
	iovs  [outboxSlots]unix.Iovec
	names [outboxSlots]unix.RawSockaddrInet6
	bufs  [outboxSlots][readBufSize]byte

	// Receives: one datagram from each of a round's ready SIP-leg
	// sockets, all in one io_uring_enter.
	rn     int
	rfrom  [inboxSlots]datagramHandler
	rhdrs  [inboxSlots]unix.Msghdr
	riovs  [inboxSlots]unix.Iovec
	rnames [inboxSlots]unix.RawSockaddrInet6
	rlen   [inboxSlots]int32
	rbufs  [inboxSlots][readBufSize]byte

	sent   atomic.Uint64 // sends completed
	failed atomic.Uint64 // sends the kernel refused (full buffer, unreachable)
	// roundFailed counts a flush's refused sends before they are added
	// to failed.
	roundFailed uint64

	// fixed[fd] is 1 + the file-table slot of the socket fd, 0 for none.
	// Set and read under the loop's lock (addAt, removeHeld, rounds).
	fixed []int32
}

// newOutbox sets up a ring; it fails where io_uring is missing or
// forbidden (old kernels, seccomp, kernel.io_uring_disabled), and the loop
// then sends each datagram at once.
func newOutbox() (*outbox, error) {
	r, err := uring.New(2 * outboxSlots)
	if err != nil {
		return nil, err
	}
	o := &outbox{ring: r}
	o.done = o.complete
	for i := range o.hdrs {
		h := &o.hdrs[i]
		h.Name = (*byte)(unsafe.Pointer(&o.names[i]))
		h.Iov = &o.iovs[i]
		h.SetIovlen(1)
		o.iovs[i].Base = &o.bufs[i][0]
	}
	for i := range o.rhdrs {
		h := &o.rhdrs[i]
		h.Name = (*byte)(unsafe.Pointer(&o.rnames[i]))
		h.Iov = &o.riovs[i]
		h.SetIovlen(1)
		o.riovs[i].Base = &o.rbufs[i][0]
		o.riovs[i].SetLen(readBufSize)
	}
	if err := o.probe(); err != nil {
		o.close()
		return nil, err
	}
	o.registerFiles()
	return o, nil
}

// registerFiles gives the ring its file table. The kernel refuses one
// larger than the descriptor limit; where io_uring_register is forbidden
// (a seccomp filter without it), sockets are named by descriptor.
func (o *outbox) registerFiles() {
	n := fixedFiles
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		n = int(min(uint64(n), lim.Cur/2))
	}
	if n < 64 {
		return
	}
	if err := o.ring.RegisterFiles(n); err != nil {
		slog.Info("media loop: sockets are looked up per send", "err", err)
	}
}

// addFile puts fd, the socket in the loop's slot, in the same slot of the
// file table, if the table has it.
func (o *outbox) addFile(slot int32, fd int) {
	if int(slot) >= o.ring.Files() || fd < 0 || fd >= maxFixedFD {
		return
	}
	if err := o.ring.SetFile(int(slot), fd); err != nil {
		slog.Debug("media loop: socket not in the file table", "fd", fd, "err", err)
		return
	}
	if fd >= len(o.fixed) {
		o.fixed = append(o.fixed, make([]int32, fd+1-len(o.fixed)+64)...)
	}
	o.fixed[fd] = slot + 1
}

// removeFile empties fd's slot: the table holds a reference to the
// socket, which would otherwise stay open (and its port bound) after the
// descriptor is closed.
func (o *outbox) removeFile(slot int32, fd int) {
	if fd < 0 || fd >= len(o.fixed) || o.fixed[fd] != slot+1 {
		return
	}
	o.fixed[fd] = 0
	if err := o.ring.SetFile(int(slot), -1); err != nil {
		slog.Error("media loop: socket left in the file table", "fd", fd, "err", err)
	}
}

// file is fd's slot in the file table, or -1.
func (o *outbox) file(fd int) int {
	if fd < len(o.fixed) {
		return int(o.fixed[fd]) - 1
	}
	return -1
}

// probe sends one datagram through the ring to a socket of its own and
// reads it back: a kernel that sets up rings but cannot send through them
// (or a policy that refuses the operation) would lose every packet.
func (o *outbox) probe() error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("io_uring probe: %w", err)
	}
	s, err := newUDPSock(c)
	if err != nil {
		return fmt.Errorf("io_uring probe: %w", err)
	}
	defer s.close()
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return fmt.Errorf("io_uring probe: %w", err)
	}
	sa4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return errors.New("io_uring probe: not IPv4")
	}
	want := []byte("mediarelay io_uring probe")
	if err := o.queue(s.out, want, netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port))); err != nil {
		return fmt.Errorf("io_uring probe: %w", err)
	}
	failed := o.failed.Load()
	o.flush()
	if o.failed.Load() != failed {
		return errors.New("io_uring probe: the send failed")
	}
	buf := make([]byte, 64)
	n, _, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
	if err != nil || string(buf[:n]) != string(want) {
		return fmt.Errorf("io_uring probe: nothing arrived (%v)", err)
	}
	o.sent.Store(0)
	return nil
}

func (o *outbox) close() { _ = o.ring.Close() }

// queue holds a copy of b for s to send to dst at the next flush.
func (o *outbox) queue(s *udpSender, b []byte, dst netip.AddrPort) error {
	if len(b) > readBufSize {
		return errors.New("datagram too large")
	}
	if o.n == outboxSlots {
		o.flush()
	}
	i := o.n
	namelen, err := s.sockaddr(&o.names[i], dst)
	if err != nil {
		return err
	}
	copy(o.bufs[i][:], b)
	o.iovs[i].SetLen(len(b))
	o.hdrs[i].Namelen = namelen
	o.from[i] = s
	o.n++
	return nil
}

// flush sends what is queued and returns once the kernel is done with it.
func (o *outbox) flush() {
	if o.n == 0 {
		return
	}
	var submitted uint64
	for i := range o.n {
		s := o.from[i]
		// The socket may have been closed since the send was queued;
		// holding a reference keeps it open until the send is done.
		if s.refs.Add(1)&sendClosed != 0 {
			s.refs.Add(-1)
			o.from[i] = nil
			continue
		}
		if f := o.file(s.fd); f >= 0 {
			o.ring.SendMsgFixed(f, &o.hdrs[i], unix.MSG_DONTWAIT, uint64(i))
		} else {
			o.ring.SendMsg(s.fd, &o.hdrs[i], unix.MSG_DONTWAIT, uint64(i))
		}
		submitted++
	}
	o.roundFailed = 0
	o.ring.Submit(o.done)
	runtime.KeepAlive(o)
	// Counted once per flush: each atomic add is a locked instruction.
	o.failed.Add(o.roundFailed)
	o.sent.Add(submitted - o.roundFailed)
	o.n = 0
}

// complete takes one completion: a read's length (or -errno), or a
// send's result, which gives its socket back.
func (o *outbox) complete(userData uint64, res int32) {
	if userData&recvTag != 0 {
		o.rlen[userData&^recvTag] = res
		return
	}
	if res < 0 {
		o.roundFailed++
	}
	if i := userData; i < outboxSlots && o.from[i] != nil {
		o.from[i].refs.Add(-1)
		o.from[i] = nil
	}
}

// datagramHandler is a loop handler whose socket the loop reads itself,
// one datagram per round, with the round's other reads in one
// io_uring_enter. A socket with more queued is ready again next round.
type datagramHandler interface {
	loopHandler
	// recvFD is the socket to read.
	recvFD() int
	// datagram handles what was read: pkt is valid during the call.
	datagram(pkt []byte, from netip.AddrPort, truncated bool, now time.Time)
}

// wantRecv adds h's socket to the round's reads, receiving at once when
// the slots are full.
func (o *outbox) wantRecv(h datagramHandler, now time.Time) {
	if o.rn == inboxSlots {
		o.receive(now)
	}
	o.rfrom[o.rn] = h
	o.rn++
}

// receive reads one datagram from each wanted socket in one
// io_uring_enter and hands each to its handler.
func (o *outbox) receive(now time.Time) {
	if o.rn == 0 {
		return
	}
	for i := range o.rn {
		o.rhdrs[i].Namelen = unix.SizeofSockaddrInet6
		o.rhdrs[i].Flags = 0
		o.rlen[i] = -int32(unix.EAGAIN)
		// MSG_TRUNC: a datagram larger than the buffer returns its real
		// length, so it is seen as cut.
		fd, flags := o.rfrom[i].recvFD(), uint32(unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if f := o.file(fd); f >= 0 {
			o.ring.RecvMsgFixed(f, &o.rhdrs[i], flags, recvTag|uint64(i))
		} else {
			o.ring.RecvMsg(fd, &o.rhdrs[i], flags, recvTag|uint64(i))
		}
	}
	o.ring.Submit(o.done)
	runtime.KeepAlive(o)
	for i := range o.rn {
		h := o.rfrom[i]
		o.rfrom[i] = nil
		n := o.rlen[i]
		if n < 0 {
			continue // nothing after all (-EAGAIN), or the socket is gone
		}
		truncated := int(n) > readBufSize || o.rhdrs[i].Flags&unix.MSG_TRUNC != 0
		h.datagram(o.rbufs[i][:min(int(n), readBufSize)], rawSource(&o.rnames[i]), truncated, now)
	}
	o.rn = 0
}
