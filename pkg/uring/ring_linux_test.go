//go:build linux

package uring

import (
	"bytes"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mediarelay/mediarelay/pkg/testenv"
)

// pair is two UDP sockets on loopback, the first connected to the second.
func pair(t *testing.T) (a, b int) {
	t.Helper()
	open := func() int {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	a, b = open(), open()
	sa, err := unix.Getsockname(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(a, sa); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestSendRecv: datagrams sent with Send and SendMsg in one Submit arrive
// in order and byte for byte through RecvMsg entries of another, each
// completion carrying its user data; a receive on an empty socket
// completes with -EAGAIN.
func TestSendRecv(t *testing.T) {
	r, err := New(8)
	if err != nil {
		testenv.Missing(t, "no io_uring", err)
	}
	defer r.Close()
	a, b := pair(t)

	first, second := []byte("through send"), []byte("through sendmsg")
	iov := unix.Iovec{Base: &second[0]}
	iov.SetLen(len(second))
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.SetIovlen(1)
	if !r.Send(a, first, unix.MSG_DONTWAIT, 1) || !r.SendMsg(a, &msg, unix.MSG_DONTWAIT, 2) {
		t.Fatal("ring full at 2 entries")
	}
	res := map[uint64]int32{}
	r.Submit(func(ud uint64, n int32) { res[ud] = n })
	if res[1] != int32(len(first)) || res[2] != int32(len(second)) {
		t.Fatalf("send results %v", res)
	}

	var (
		bufs [3][64]byte
		iovs [3]unix.Iovec
		msgs [3]unix.Msghdr
		name [3]unix.RawSockaddrInet4
	)
	for i := range msgs {
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
		msgs[i].Iov = &iovs[i]
		msgs[i].SetIovlen(1)
		msgs[i].Name = (*byte)(unsafe.Pointer(&name[i]))
		msgs[i].Namelen = unix.SizeofSockaddrInet4
		if !r.RecvMsg(b, &msgs[i], unix.MSG_DONTWAIT, uint64(10+i)) {
			t.Fatal("ring full")
		}
	}
	clear(res)
	r.Submit(func(ud uint64, n int32) { res[ud] = n })
	if got := bufs[0][:max(res[10], 0)]; !bytes.Equal(got, first) {
		t.Errorf("first read %q, want %q", got, first)
	}
	if got := bufs[1][:max(res[11], 0)]; !bytes.Equal(got, second) {
		t.Errorf("second read %q, want %q", got, second)
	}
	if res[12] != -int32(unix.EAGAIN) {
		t.Errorf("read of an empty socket gave %d, want -EAGAIN", res[12])
	}
	if name[0].Family != unix.AF_INET || name[0].Addr != [4]byte{127, 0, 0, 1} {
		t.Errorf("source %+v", name[0])
	}
}

// TestFull: a ring takes no more entries than it has before a Submit.
func TestFull(t *testing.T) {
	r, err := New(4)
	if err != nil {
		testenv.Missing(t, "no io_uring", err)
	}
	defer r.Close()
	a, _ := pair(t)
	b := []byte("x")
	n := 0
	for r.Send(a, b, unix.MSG_DONTWAIT, uint64(n)) {
		n++
	}
	if n != r.Entries() || r.Queued() != n {
		t.Errorf("took %d (queued %d), want %d", n, r.Queued(), r.Entries())
	}
	done := 0
	r.Submit(func(uint64, int32) { done++ })
	if done != n || r.Queued() != 0 {
		t.Errorf("%d completions, want %d", done, n)
	}
}

// TestFixedFiles: a datagram sent and received through file-table slots
// arrives byte for byte; an empty slot fails its entry with -EBADF; a slot
// out of range is refused; and once a slot is emptied, closing its
// descriptor closes the socket (its port can be bound again), so the
// table keeps nothing open behind the owner's back.
func TestFixedFiles(t *testing.T) {
	r, err := New(8)
	if err != nil {
		testenv.Missing(t, "no io_uring", err)
	}
	defer r.Close()
	if err := r.RegisterFiles(4); err != nil {
		testenv.Missing(t, "no io_uring file table", err)
	}
	a, b := pair(t)
	if err := r.SetFile(0, a); err != nil {
		t.Fatal(err)
	}
	if err := r.SetFile(3, b); err != nil {
		t.Fatal(err)
	}
	if err := r.SetFile(4, b); err == nil {
		t.Error("slot 4 of 4 was taken")
	}

	want := []byte("through a fixed file")
	out := unix.Iovec{Base: &want[0]}
	out.SetLen(len(want))
	var sm unix.Msghdr
	sm.Iov = &out
	sm.SetIovlen(1)
	var buf [64]byte
	in := unix.Iovec{Base: &buf[0]}
	in.SetLen(len(buf))
	var rm unix.Msghdr
	rm.Iov = &in
	rm.SetIovlen(1)
	res := map[uint64]int32{}
	r.SendMsgFixed(0, &sm, unix.MSG_DONTWAIT, 1)
	r.Submit(func(ud uint64, n int32) { res[ud] = n })
	r.RecvMsgFixed(3, &rm, unix.MSG_DONTWAIT, 2)
	r.RecvMsgFixed(1, &rm, unix.MSG_DONTWAIT, 3) // an empty slot
	r.Submit(func(ud uint64, n int32) { res[ud] = n })
	if res[1] != int32(len(want)) {
		t.Fatalf("fixed send gave %d", res[1])
	}
	if got := buf[:max(res[2], 0)]; !bytes.Equal(got, want) {
		t.Errorf("fixed read %q (%d), want %q", got, res[2], want)
	}
	if res[3] != -int32(unix.EBADF) {
		t.Errorf("read through an empty slot gave %d, want -EBADF", res[3])
	}

	// Empty b's slot, close b's socket, and bind its port again.
	sa, err := unix.Getsockname(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetFile(3, -1); err != nil {
		t.Fatal(err)
	}
	// pair's cleanup closes b's number again: dup2 keeps it taken
	// until then by a descriptor that is not b's socket.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Dup2(fd, b); err != nil { // closes b's socket
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Errorf("the port of a closed socket whose slot was emptied is still bound: %v", err)
	}
}
