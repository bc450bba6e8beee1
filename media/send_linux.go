//go:build linux

package media

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendClosed marks a udpSender whose socket is about to close.
const sendClosed = 1 << 62

// udpSender writes datagrams with a raw non-blocking sendto: the media
// path never blocks on a UDP send (a full buffer drops the packet, as the
// network would), so the call need not go through the scheduler the way
// net.UDPConn's does. It counts sends in flight so that a socket is never
// closed, and its number reused, under one. Safe for concurrent use.
type udpSender struct {
	fd   int
	v6   bool // the socket is AF_INET6: IPv4 peers go as mapped addresses
	refs atomic.Int64
}

// newRawSender sends on fd, which stays open until shut has returned.
func newRawSender(fd int) (*udpSender, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	_, v6 := sa.(*unix.SockaddrInet6)
	return &udpSender{fd: fd, v6: v6}, nil
}

// sendTo sends b to dst.
func (s *udpSender) sendTo(b []byte, dst netip.AddrPort) error {
	if s.refs.Add(1)&sendClosed != 0 {
		s.refs.Add(-1)
		return net.ErrClosed
	}
	var sa unix.RawSockaddrInet6
	n, err := s.sockaddr(&sa, dst)
	if err != nil {
		s.refs.Add(-1)
		return err
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(n))
	s.refs.Add(-1)
	if e != 0 {
		return e
	}
	return nil
}

// sockaddr writes dst into sa in the socket's family and returns its
// length.
func (s *udpSender) sockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) (uint32, error) {
	if s.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.Addr().As16()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		return unix.SizeofSockaddrInet6, nil
	}
	a := dst.Addr().Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("send to %s from an IPv4 socket", dst)
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
	p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
	return unix.SizeofSockaddrInet4, nil
}

// shut stops new sends and waits for those in flight; the socket may
// then be closed.
func (s *udpSender) shut() {
	for {
		v := s.refs.Load()
		if v&sendClosed != 0 || s.refs.CompareAndSwap(v, v|sendClosed) {
			break
		}
	}
	for s.refs.Load()&^sendClosed != 0 {
		runtime.Gosched()
	}
}
