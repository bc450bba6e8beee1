//go:build linux

package media

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readBatchSize is how many datagrams one recvmmsg may return on a SIP
// leg's socket. It carries one call (50-100 packets/s), so a handful is
// plenty: when the reader falls behind under load it catches up in one
// syscall.
const readBatchSize = 8

// readBufSize holds any datagram an Ethernet MTU allows, with room to spare.
const readBufSize = 2048

// batchReader receives with recvmmsg into buffers it owns. It parses source
// addresses itself because golang.org/x/net's ReadBatch allocates a
// net.UDPAddr per message. Used by one reading goroutine only.
type batchReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 too
	bufs  [][]byte

	got, next int
	errno     syscall.Errno
	recvFn    func(fd uintptr) bool // the method value, made once: no allocation per read
}

func newBatchReader(c *net.UDPConn) *batchReader { return newBatchReaderSize(c, readBatchSize) }

// newBatchReaderSize makes a reader that takes up to size datagrams per
// syscall.
func newBatchReaderSize(c *net.UDPConn, size int) *batchReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := newBatchBuffers(size)
	r.rc = rc
	return r
}

// newBatchBuffers makes a reader for take only: a loop's, shared by the
// sockets it serves.
func newBatchBuffers(size int) *batchReader {
	r := &batchReader{
		hdrs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
		bufs:  make([][]byte, size),
	}
	backing := make([]byte, size*readBufSize)
	for i := range r.hdrs {
		r.bufs[i] = backing[i*readBufSize : (i+1)*readBufSize : (i+1)*readBufSize]
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(readBufSize)
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.recvFn = r.recv
	return r
}

// recv runs under RawConn.Read: returning false means "not ready, wait in
// the netpoller", which keeps the socket's deadlines and Close working.
//
// Raw: with MSG_DONTWAIT it never blocks, so the scheduler need not be
// told, and a Syscall made while every P is idle wakes sysmon from its
// deep sleep into 20 µs polling.
func (r *batchReader) recv(fd uintptr) bool {
	for i := range r.hdrs {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.Flags = 0
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0:
		r.got, r.next, r.errno = int(n), 0, 0
		return true
	case unix.EAGAIN, unix.EINTR:
		return false
	default:
		r.got, r.next, r.errno = 0, 0, e
		return true
	}
}

// fill blocks until at least one datagram is in the batch and returns how
// many there are; message i is then at(i).
func (r *batchReader) fill() (int, error) {
	r.got, r.next = 0, 0
	for r.got == 0 {
		if err := r.rc.Read(r.recvFn); err != nil {
			return 0, err
		}
		if r.errno != 0 {
			return 0, r.errno
		}
	}
	return r.got, nil
}

// at returns message i of the last fill: its bytes, source, and whether
// the kernel truncated it.
func (r *batchReader) at(i int) (pkt []byte, from netip.AddrPort, truncated bool) {
	h := &r.hdrs[i]
	return r.bufs[i][:h.Len], r.source(i), h.Hdr.Flags&unix.MSG_TRUNC != 0
}

// read returns the next datagram, its source, and whether the kernel
// truncated it. pkt is valid until the next call.
func (r *batchReader) read() (pkt []byte, from netip.AddrPort, truncated bool, err error) {
	for r.next >= r.got {
		if err := r.rc.Read(r.recvFn); err != nil {
			return nil, netip.AddrPort{}, false, err
		}
		if r.errno != 0 {
			return nil, netip.AddrPort{}, false, r.errno
		}
	}
	i := r.next
	r.next++
	pkt, from, truncated = r.at(i)
	return pkt, from, truncated, nil
}

// source decodes the sockaddr of message i. Zones of link-local IPv6
// sources are dropped: media peers are matched by the SDP address, which
// has none.
func (r *batchReader) source(i int) netip.AddrPort { return rawSource(&r.names[i]) }

// rawSource decodes a source address the kernel wrote.
func rawSource(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// take receives what is queued at fd without blocking, for a loop
// handler, and returns how many datagrams are in the batch (message i is
// at(i)). It does not enter the scheduler: the call cannot block.
func (r *batchReader) take(fd int) int {
	for i := range r.hdrs {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.Flags = 0
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0
	}
	r.got, r.next = int(n), 0
	return int(n)
}

// size is how many datagrams a batch holds.
func (r *batchReader) size() int { return len(r.hdrs) }

// newShardBatch makes a shard's buffers, for its loop's takes.
func newShardBatch() *batchReader { return newBatchBuffers(shardBatch) }
