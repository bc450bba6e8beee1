//go:build linux

package benchmarks

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mediarelay/mediarelay/pkg/uring"
)

// A shard's batcher sends a tick's media with one io_uring_enter per
// sendSlots packets, and reads the sockets the tick finds ready with one
// io_uring_enter for all of them, instead of a write or a recvmsg each:
// each call has its own socket, which sendmmsg and recvmmsg cannot batch,
// and entering the kernel costs about 1.4 µs on the guests we measure on,
// a quarter of a loopback send. The relay's media loops batch the same
// way (media/uring_linux.go); a load client that did not would cost more
// per call than the relay it measures.
//
// Only the shard's goroutine (or whoever holds sh.mu) uses it. Sends go
// with MSG_DONTWAIT, so the kernel issues each inline and never later from
// our buffers (a full socket buffer fails the send, as a non-blocking
// write would), and every Submit waits for all completions before a
// buffer is reused. Receives carry a control buffer, so each datagram
// keeps its kernel arrival stamp (SO_TIMESTAMPNS).

const (
	// sendSlots bounds the sends per io_uring_enter. Each packet's
	// delay marker is stamped when it is built, and it leaves when its
	// batch is submitted: a smaller batch keeps that gap (and so the
	// error in the measured round trip) to tens of µs, while the entry
	// cost is already shared by enough packets not to matter.
	sendSlots = 32
	// recvSlots is how many sockets one io_uring_enter reads: as many as
	// one poll of the shard's media set returns.
	recvSlots = 256
	// slotSize holds any datagram the relay sends (the shard's own
	// buffers are as large).
	slotSize = 2048
	recvTag  = 1 << 32
	// fileSlots bounds the ring's file table (see addFile).
	fileSlots = 4096
)

// batcher is a shard's ring and the buffers of the sends and reads it
// holds between a queue and the Submit that completes them.
type batcher struct {
	ring *uring.Ring
	done func(userData uint64, res int32) // b.complete, made once: no allocation per tick
	sent *atomic.Uint64                   // the client's count of packets sent

	// Sends queued for the next flush: socket, packet.
	sn    int
	sfd   [sendSlots]int
	slen  [sendSlots]int
	sbuf  [sendSlots][slotSize]byte
	nsent uint64 // sends completed in this flush

	// Receives: one datagram from each of a tick's ready sockets.
	rn    int
	rcall [recvSlots]*call
	rfd   [recvSlots]int
	rmsg  [recvSlots]unix.Msghdr
	riov  [recvSlots]unix.Iovec
	rsa   [recvSlots]unix.RawSockaddrInet4
	roob  [recvSlots][64]byte
	rres  [recvSlots]int32
	rbuf  [recvSlots][slotSize]byte

	// fixed[fd] reports that socket fd is in slot fd of the ring's file
	// table; empty where the table could not be registered.
	fixed []bool
}

// datagramSink takes what a batch of receives read.
type datagramSink interface {
	// arrived handles pkt, read from c's socket; at is the kernel's
	// arrival stamp (Unix ns, wall clock), now when the shard read it.
	// pkt is valid during the call.
	arrived(c *call, pkt []byte, from netip.AddrPort, at int64, now time.Time)
}

// newBatcher sets up a ring and proves it sends, receives and stamps; it
// fails where io_uring is missing or forbidden, or any of that does not
// work, and the shard then makes a syscall per packet.
func newBatcher(sent *atomic.Uint64) (*batcher, error) {
	r, err := uring.New(recvSlots)
	if err != nil {
		return nil, fmt.Errorf("load client io_uring: %w", err)
	}
	b := &batcher{ring: r}
	b.done = b.complete
	for i := range b.rmsg {
		m := &b.rmsg[i]
		m.Name = (*byte)(unsafe.Pointer(&b.rsa[i]))
		m.Iov = &b.riov[i]
		m.SetIovlen(1)
		m.Control = &b.roob[i][0]
		b.riov[i].Base = &b.rbuf[i][0]
		b.riov[i].SetLen(slotSize)
	}
	if err := b.probe(); err != nil {
		b.close()
		return nil, fmt.Errorf("load client io_uring: %w", err)
	}
	b.sent = sent
	b.registerFiles()
	return b, nil
}

// registerFiles gives the ring a file table, so that the kernel looks a
// call's socket up once instead of on every send and read (as the
// relay's loops do). The kernel refuses a table larger than the
// descriptor limit; without one, sockets are named by descriptor.
func (b *batcher) registerFiles() {
	n := fileSlots
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		n = int(min(uint64(n), lim.Cur/2))
	}
	if n < 64 || b.ring.RegisterFiles(n) != nil {
		return
	}
	b.fixed = make([]bool, n)
}

// addFile puts socket fd in the file table, in slot fd: descriptors are
// small and unique while open, so they need no slot allocator.
func (b *batcher) addFile(fd int) {
	if fd >= 0 && fd < len(b.fixed) && b.ring.SetFile(fd, fd) == nil {
		b.fixed[fd] = true
	}
}

// removeFile takes socket fd out of the file table; it must come before
// the socket is closed, since the table holds a reference that would
// keep it open (and its port bound).
func (b *batcher) removeFile(fd int) {
	if fd < 0 || fd >= len(b.fixed) || !b.fixed[fd] {
		return
	}
	b.fixed[fd] = false
	_ = b.ring.SetFile(fd, -1) // cannot fail for a slot that was set
}

// inTable reports whether fd is named by its slot in the file table.
func (b *batcher) inTable(fd int) bool { return fd < len(b.fixed) && b.fixed[fd] }

// probe sends a datagram through the ring between two sockets of its own
// and reads it back through the ring: a kernel that sets up rings but
// cannot send or receive through them, or gives no arrival stamp on the
// way, would lose every packet or every delay sample.
func (b *batcher) probe() error {
	var sent atomic.Uint64
	b.sent = &sent
	from, err := openUDPSock()
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer from.close()
	to, err := openUDPSock()
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer to.close()
	lo := netip.MustParseAddr("127.0.0.1")
	if err := from.connect(netip.AddrPortFrom(lo, uint16(to.port))); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	want := "mediarelay load client io_uring probe"
	b.queueSend(from.fd, []byte(want))
	b.flushSends()
	if sent.Load() != 1 {
		return errors.New("probe: the send failed")
	}
	p := &probeSink{}
	b.queueRecv(to.fd, nil)
	b.receive(p, time.Now())
	switch {
	case p.pkt != want:
		return fmt.Errorf("probe: read %q, want %q", p.pkt, want)
	case p.from != netip.AddrPortFrom(lo, uint16(from.port)):
		return fmt.Errorf("probe: read from %s, want port %d", p.from, from.port)
	case p.at == 0:
		return errors.New("probe: no arrival stamp")
	}
	return nil
}

// probeSink keeps what the probe read.
type probeSink struct {
	pkt  string
	from netip.AddrPort
	at   int64
}

func (p *probeSink) arrived(_ *call, pkt []byte, from netip.AddrPort, at int64, _ time.Time) {
	p.pkt, p.from, p.at = string(pkt), from, at
}

func (b *batcher) close() { _ = b.ring.Close() }

// sendBuf is the buffer of the next queued send, to build a packet in;
// queueSend queues it. Full, it flushes first.
func (b *batcher) sendBuf() []byte {
	if b.sn == sendSlots {
		b.flushSends()
	}
	return b.sbuf[b.sn][:]
}

// queueSend queues pkt for the connected socket fd. pkt is normally built
// in sendBuf's buffer; anything else is copied there.
func (b *batcher) queueSend(fd int, pkt []byte) {
	if len(pkt) == 0 || len(pkt) > slotSize {
		return
	}
	if b.sn == sendSlots {
		b.flushSends()
	}
	i := b.sn
	if &pkt[0] != &b.sbuf[i][0] {
		copy(b.sbuf[i][:], pkt)
	}
	b.sfd[i], b.slen[i] = fd, len(pkt)
	b.sn++
}

// flushSends sends what is queued and returns once the kernel is done
// with it, counting the packets that left. The sockets must stay open
// until then: the shard queues and flushes under its lock, which closing
// a call's socket takes.
func (b *batcher) flushSends() {
	if b.sn == 0 {
		return
	}
	b.nsent = 0
	for i := range b.sn {
		if fd := b.sfd[i]; b.inTable(fd) {
			b.ring.SendFixed(fd, b.sbuf[i][:b.slen[i]], unix.MSG_DONTWAIT, uint64(i))
		} else {
			b.ring.Send(fd, b.sbuf[i][:b.slen[i]], unix.MSG_DONTWAIT, uint64(i))
		}
	}
	b.ring.Submit(b.done)
	runtime.KeepAlive(b)
	b.sn = 0
	b.sent.Add(b.nsent)
}

// complete takes one completion: a read's length (or -errno), or whether
// a send left.
func (b *batcher) complete(userData uint64, res int32) {
	if userData&recvTag != 0 {
		b.rres[userData&^recvTag] = res
		return
	}
	if res >= 0 {
		b.nsent++
	}
}

// queueRecv adds a read of socket fd, for call c, to the next receive;
// it reports false when the batch is full (receive, then queue again).
func (b *batcher) queueRecv(fd int, c *call) bool {
	if b.rn == recvSlots {
		return false
	}
	b.rfd[b.rn], b.rcall[b.rn] = fd, c
	b.rn++
	return true
}

// receive reads one datagram from each queued socket with one
// io_uring_enter and hands each that had one to sink, in the order they
// were queued. A socket with more waiting stays readable: the next poll
// reports it again.
func (b *batcher) receive(sink datagramSink, now time.Time) {
	if b.rn == 0 {
		return
	}
	for i := range b.rn {
		m := &b.rmsg[i]
		m.Namelen = unix.SizeofSockaddrInet4
		m.SetControllen(len(b.roob[i]))
		m.Flags = 0
		b.rres[i] = -int32(unix.EAGAIN)
		// MSG_TRUNC: a datagram larger than the buffer returns its real
		// length, so it is seen as cut and dropped, as recv drops it.
		if fd := b.rfd[i]; b.inTable(fd) {
			b.ring.RecvMsgFixed(fd, m, unix.MSG_DONTWAIT|unix.MSG_TRUNC, recvTag|uint64(i))
		} else {
			b.ring.RecvMsg(fd, m, unix.MSG_DONTWAIT|unix.MSG_TRUNC, recvTag|uint64(i))
		}
	}
	b.ring.Submit(b.done)
	runtime.KeepAlive(b)
	for i := range b.rn {
		c := b.rcall[i]
		b.rcall[i] = nil
		n, m, sa := b.rres[i], &b.rmsg[i], &b.rsa[i]
		if n <= 0 || int(n) > slotSize || m.Flags&unix.MSG_TRUNC != 0 || sa.Family != unix.AF_INET {
			continue // nothing after all (-EAGAIN), a failed read, or a cut datagram
		}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		from := netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
		at := cmsgStamp(b.roob[i][:min(int(m.Controllen), len(b.roob[i]))])
		sink.arrived(c, b.rbuf[i][:n], from, at, now)
	}
	b.rn = 0
}
