//go:build linux

package benchmarks

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uasBatch is how many datagrams one recvmmsg takes from the UAS's RTP
// socket, and how many echoes one sendmmsg sends. The socket carries the
// trunk side of every call (60 000 packets/s at 1 200 calls): read and
// written a datagram at a time, with a park in the netpoller whenever it
// was empty, it cost more than the relay it measured and, not the relay,
// set the ladders' knee.
const uasBatch = 64

// rtpBatch reads the UAS's RTP socket with recvmmsg, each datagram with
// its kernel arrival stamp (SO_TIMESTAMPNS), so a datagram that waited in
// the socket for the batch is timed as it arrived; and sends the echoes a
// batch has queued with one sendmmsg. One goroutine uses it.
type rtpBatch struct {
	rc syscall.RawConn

	rh   [uasBatch]unix.Mmsghdr
	riov [uasBatch]unix.Iovec
	rsa  [uasBatch]unix.RawSockaddrInet4
	roob [uasBatch][64]byte
	rbuf [uasBatch][slotSize]byte
	got  int

	wh   [uasBatch]unix.Mmsghdr
	wiov [uasBatch]unix.Iovec
	wsa  [uasBatch]unix.RawSockaddrInet4
	wbuf [uasBatch][slotSize]byte
	wn   int
	woff int // the first queued echo not yet sent

	errno          syscall.Errno
	recvFn, sendFn func(fd uintptr) bool // method values, made once: no allocation per batch
}

// newRTPBatch prepares batched reads and writes on c, an IPv4 socket, and
// turns on its arrival stamps.
func newRTPBatch(c *net.UDPConn) (*rtpBatch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("uas rtp socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, fmt.Errorf("uas rtp socket: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("uas rtp socket SO_TIMESTAMPNS: %w", serr)
	}
	b := &rtpBatch{rc: rc}
	b.recvFn, b.sendFn = b.recv, b.send
	for i := range uasBatch {
		r := &b.rh[i].Hdr
		r.Name = (*byte)(unsafe.Pointer(&b.rsa[i]))
		r.Iov = &b.riov[i]
		r.SetIovlen(1)
		b.riov[i].Base = &b.rbuf[i][0]
		b.riov[i].SetLen(slotSize)
		w := &b.wh[i].Hdr
		w.Name = (*byte)(unsafe.Pointer(&b.wsa[i]))
		w.Namelen = unix.SizeofSockaddrInet4
		w.Iov = &b.wiov[i]
		w.SetIovlen(1)
		b.wiov[i].Base = &b.wbuf[i][0]
	}
	return b, nil
}

// read waits for datagrams and takes up to uasBatch of them; at then
// gives each.
func (b *rtpBatch) read() (int, error) {
	for i := range uasBatch {
		h := &b.rh[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet4
		h.Control = &b.roob[i][0]
		h.SetControllen(len(b.roob[i]))
		h.Flags = 0
		b.rh[i].Len = 0
	}
	b.got, b.errno = 0, 0
	if err := b.rc.Read(b.recvFn); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, fmt.Errorf("uas rtp recvmmsg: %w", b.errno)
	}
	return b.got, nil
}

// recv is read's attempt: false (nothing there) makes RawConn.Read wait
// in the netpoller until the socket is readable.
func (b *rtpBatch) recv(fd uintptr) bool {
	n, e, ok := mmsg(unix.SYS_RECVMMSG, fd, &b.rh[0], uasBatch)
	b.got, b.errno = n, e
	return ok
}

// mmsg makes a recvmmsg or sendmmsg (trap) of n messages from hdrs on fd
// without blocking, again when a signal interrupts it; false means the
// socket has to be waited for (EAGAIN).
//
// Raw, as the media loops' sends are: with MSG_DONTWAIT it does not block,
// so the scheduler need not be told, and a Syscall made while every P is
// idle wakes sysmon from its deep sleep into 20 µs polling (with the
// client's waits, 12-15 % of the load generator's CPU).
func mmsg(trap, fd uintptr, hdrs *unix.Mmsghdr, n int) (int, syscall.Errno, bool) {
	for {
		r, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(hdrs)), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, 0, false
		case 0:
			return int(r), 0, true
		default:
			return 0, e, true
		}
	}
}

// at is datagram i of the last read: its bytes (valid until the next
// read), its source and its arrival (Unix ns, wall clock; 0 without a
// stamp). ok is false for a datagram cut to the buffer or not from IPv4.
func (b *rtpBatch) at(i int) (pkt []byte, from netip.AddrPort, arrival int64, ok bool) {
	h, sa := &b.rh[i], &b.rsa[i]
	n := int(h.Len)
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 || n > slotSize || sa.Family != unix.AF_INET {
		return nil, netip.AddrPort{}, 0, false
	}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	arrival = cmsgStamp(b.roob[i][:min(int(h.Hdr.Controllen), len(b.roob[i]))])
	return b.rbuf[i][:n], from, arrival, true
}

// queue copies pkt into the next echo to send to to, flushing first when
// the batch is full. Echoes go only to IPv4 sources, as read gives them.
func (b *rtpBatch) queue(pkt []byte, to netip.AddrPort) error {
	if len(pkt) > slotSize || !to.Addr().Is4() {
		return errors.New("uas rtp echo: too large, or not to IPv4")
	}
	if b.wn == uasBatch {
		if err := b.flush(); err != nil {
			return err
		}
	}
	i := b.wn
	copy(b.wbuf[i][:], pkt)
	b.wiov[i].SetLen(len(pkt))
	b.wsa[i].Family = unix.AF_INET
	b.wsa[i].Addr = to.Addr().As4()
	p := (*[2]byte)(unsafe.Pointer(&b.wsa[i].Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
	b.wn++
	return nil
}

// flush sends the queued echoes with as few sendmmsg as the kernel
// allows, waiting while the socket's buffer is full. An echo the kernel
// refuses is dropped (the client counts it lost) and the rest still go.
func (b *rtpBatch) flush() error {
	var err error
	for b.woff < b.wn && err == nil {
		b.errno = 0
		if err = b.rc.Write(b.sendFn); err == nil && b.errno != 0 {
			b.woff++ // sendmmsg stops at the refused one: skip it
		}
	}
	b.wn, b.woff = 0, 0
	return err
}

// send is flush's attempt: false (buffer full) makes RawConn.Write wait
// until the socket is writable.
func (b *rtpBatch) send(fd uintptr) bool {
	n, e, ok := mmsg(unix.SYS_SENDMMSG, fd, &b.wh[b.woff], b.wn-b.woff)
	if ok && e == 0 && n == 0 {
		e = unix.EIO // none taken: skip one rather than spin
	}
	b.woff += n
	b.errno = e
	return ok
}
