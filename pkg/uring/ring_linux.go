//go:build linux

package uring

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes and flags of the io_uring ABI (include/uapi/linux/io_uring.h).
const (
	opSendmsg = 9  // since 5.3
	opRecvmsg = 10 // since 5.3
	opSend    = 26 // since 5.6

	enterGetEvents = 1 << 0
	sqeFixedFile   = 1 << 0 // IOSQE_FIXED_FILE: fd is an index in the file table

	registerFiles       = 2 // since 5.1; -1 entries (sparse) since 5.5
	registerFilesUpdate = 6 // since 5.5
	featSingleMmap      = 1 << 0
	offSQRing           = 0
	offCQRing           = 0x8000000
	offSQEs             = 0x10000000
)

// The kernel's structures, laid out as it lays them out.
type (
	sqRingOffsets struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqRingOffsets struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
	params struct {
		sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
		resv                                                                   [3]uint32
		sqOff                                                                  sqRingOffsets
		cqOff                                                                  cqRingOffsets
	}
	sqe struct {
		opcode      uint8
		flags       uint8
		ioprio      uint16
		fd          int32
		off         uint64
		addr        uint64
		len         uint32
		opFlags     uint32
		userData    uint64
		bufIndex    uint16
		personality uint16
		spliceFDIn  int32
		addr3       uint64
		pad         uint64
	}
	cqe struct {
		userData uint64
		res      int32
		flags    uint32
	}
)

// Ring is one io_uring instance. Its owner prepares entries (SendMsg,
// RecvMsg, Send), then Submit hands them all to the kernel at once and
// returns when every one has completed, so nothing is in flight between
// rounds and no buffer is read or written by the kernel behind the
// owner's back. A Ring is not safe for concurrent use: one goroutine (or
// a lock) owns it.
//
// The memory an entry points to (message headers, buffers, addresses) is
// the caller's and must stay put until Submit returns; Go does not move
// heap objects, and the caller keeps them reachable.
type Ring struct {
	fd      int
	sqRing  []byte
	cqRing  []byte
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []sqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []cqe
	single  bool // one mapping holds both rings
	files   int  // slots in the file table (RegisterFiles)

	tail     uint32 // the next entry's place; published by Submit
	queued   uint32 // prepared, not yet submitted
	inFlight uint32 // submitted, not yet reaped
}

// New sets up a ring for at least entries entries at a time (the kernel
// rounds up to a power of two; its completion queue is twice as long, so
// it cannot overflow while Submit waits for everything). It fails where
// io_uring is missing or forbidden.
func New(entries uint32) (*Ring, error) {
	var p params
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", e)
	}
	r := &Ring{fd: int(fd)}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	r.tail = *r.sqTail
	return r, nil
}

func (r *Ring) mmap(p *params) error {
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	r.single = p.features&featSingleMmap != 0
	if r.single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sqRing, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("io_uring: map sq: %w", err)
	}
	r.cqRing = r.sqRing
	if !r.single {
		if r.cqRing, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
			r.cqRing = nil
			return fmt.Errorf("io_uring: map cq: %w", err)
		}
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), prot, flags); err != nil {
		return fmt.Errorf("io_uring: map sqes: %w", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead, r.sqTail = u32(r.sqRing, p.sqOff.head), u32(r.sqRing, p.sqOff.tail)
	r.sqMask = *u32(r.sqRing, p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(u32(r.sqRing, p.sqOff.array), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead, r.cqTail = u32(r.cqRing, p.cqOff.head), u32(r.cqRing, p.cqOff.tail)
	r.cqMask = *u32(r.cqRing, p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&r.cqRing[p.cqOff.cqes])), p.cqEntries)
	return nil
}

// Close unmaps the ring and closes its descriptor. Nothing may be in
// flight (Submit has returned).
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
	}
	if r.cqRing != nil && !r.single {
		_ = unix.Munmap(r.cqRing)
	}
	if r.sqRing != nil {
		_ = unix.Munmap(r.sqRing)
	}
	r.sqeMem, r.cqRing, r.sqRing = nil, nil, nil
	if err := unix.Close(r.fd); err != nil {
		return fmt.Errorf("io_uring: close: %w", err)
	}
	return nil
}

// Entries is how many entries can be prepared before a Submit.
func (r *Ring) Entries() int { return len(r.sqes) }

// Queued is how many entries are prepared and not yet submitted.
func (r *Ring) Queued() int { return int(r.queued) }

// RegisterFiles gives the ring a table of n file slots, all empty. A
// descriptor put in a slot (SetFile) is looked up once, not on every
// entry that uses it: SendMsgFixed and RecvMsgFixed name the slot. The
// table holds a reference to each file in it, so a slot must be emptied
// (SetFile with -1) before its descriptor is closed, or the file stays
// open. It fails where io_uring_register is missing or forbidden.
func (r *Ring) RegisterFiles(n int) error {
	fds := make([]int32, n)
	for i := range fds {
		fds[i] = -1
	}
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFiles, uintptr(unsafe.Pointer(&fds[0])), uintptr(n), 0, 0); e != 0 {
		return fmt.Errorf("io_uring_register files: %w", e)
	}
	r.files = n
	return nil
}

// Files is the size of the file table; 0 without one.
func (r *Ring) Files() int { return r.files }

// SetFile puts fd in slot i of the file table, or empties it with -1.
// Safe while entries are prepared but not while Submit runs.
func (r *Ring) SetFile(i int, fd int) error {
	if i < 0 || i >= r.files {
		return fmt.Errorf("io_uring file slot %d of %d", i, r.files)
	}
	v := int32(fd)
	up := struct {
		offset, resv uint32
		fds          uint64
	}{offset: uint32(i), fds: uint64(uintptr(unsafe.Pointer(&v)))}
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFilesUpdate, uintptr(unsafe.Pointer(&up)), 1, 0, 0)
	if e != 0 {
		return fmt.Errorf("io_uring file slot %d: %w", i, e)
	}
	if n != 1 {
		return fmt.Errorf("io_uring file slot %d: not updated", i)
	}
	return nil
}

// SendMsgFixed is SendMsg on the socket in slot i of the file table.
func (r *Ring) SendMsgFixed(i int, msg *unix.Msghdr, flags uint32, userData uint64) bool {
	return r.prep(sqe{opcode: opSendmsg, flags: sqeFixedFile, fd: int32(i), addr: uint64(uintptr(unsafe.Pointer(msg))), len: 1, opFlags: flags, userData: userData})
}

// RecvMsgFixed is RecvMsg on the socket in slot i of the file table.
func (r *Ring) RecvMsgFixed(i int, msg *unix.Msghdr, flags uint32, userData uint64) bool {
	return r.prep(sqe{opcode: opRecvmsg, flags: sqeFixedFile, fd: int32(i), addr: uint64(uintptr(unsafe.Pointer(msg))), len: 1, opFlags: flags, userData: userData})
}

// SendMsg prepares a sendmsg(2) of msg on fd with flags (MSG_DONTWAIT
// makes the kernel try it once, inline, and never later from the
// caller's buffers). userData comes back with its completion. It reports
// false, preparing nothing, when the ring is full: Submit first.
func (r *Ring) SendMsg(fd int, msg *unix.Msghdr, flags uint32, userData uint64) bool {
	return r.prep(sqe{opcode: opSendmsg, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(msg))), len: 1, opFlags: flags, userData: userData})
}

// RecvMsg prepares a recvmsg(2) into msg on fd, as SendMsg prepares a
// send. The kernel writes back msg's name length, control length and
// flags, as recvmsg(2) does.
func (r *Ring) RecvMsg(fd int, msg *unix.Msghdr, flags uint32, userData uint64) bool {
	return r.prep(sqe{opcode: opRecvmsg, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(msg))), len: 1, opFlags: flags, userData: userData})
}

// Send prepares a send(2) of b on a connected socket fd: no message
// header to fill, for a socket that has one peer. b must not be empty.
func (r *Ring) Send(fd int, b []byte, flags uint32, userData uint64) bool {
	return r.prep(sqe{opcode: opSend, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(&b[0]))), len: uint32(len(b)), opFlags: flags, userData: userData})
}

// SendFixed is Send on the connected socket in slot i of the file table.
func (r *Ring) SendFixed(i int, b []byte, flags uint32, userData uint64) bool {
	return r.prep(sqe{opcode: opSend, flags: sqeFixedFile, fd: int32(i), addr: uint64(uintptr(unsafe.Pointer(&b[0]))), len: uint32(len(b)), opFlags: flags, userData: userData})
}

func (r *Ring) prep(e sqe) bool {
	if int(r.queued+r.inFlight) >= len(r.sqes) {
		return false
	}
	idx := r.tail & r.sqMask
	r.sqes[idx] = e
	r.sqArray[idx] = idx
	r.tail++
	r.queued++
	return true
}

// Submit hands every prepared entry to the kernel, with one
// io_uring_enter when the kernel takes them all (it normally does), and
// returns once each has completed, calling done with its user data and
// result (a count, or a negative errno) in completion order. Entries the
// kernel refused to take are completed with the refusal's errno. done
// must not prepare or submit on r.
func (r *Ring) Submit(done func(userData uint64, res int32)) {
	pending := r.queued
	r.queued = 0
	atomic.StoreUint32(r.sqTail, r.tail) // only we move the tail
	r.inFlight += pending
	for r.inFlight > 0 {
		var (
			n uintptr
			e syscall.Errno
		)
		if pending > 0 {
			// Raw: the entries are issued inline and, with MSG_DONTWAIT,
			// do not block, so the scheduler need not be told.
			n, _, e = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(pending), 0, 0, 0, 0)
		} else {
			// Everything is submitted; wait for what the kernel has
			// not completed yet (with MSG_DONTWAIT, nothing).
			n, _, e = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 1, enterGetEvents, 0, 0)
			n = 0
		}
		switch e {
		case 0:
			pending -= min(pending, uint32(n))
		case unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			r.abandon(pending, e, done)
			pending = 0
		}
		r.reap(done)
	}
}

// reap takes the completions the kernel has posted.
func (r *Ring) reap(done func(uint64, int32)) {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		r.inFlight--
		done(c.userData, c.res)
	}
	atomic.StoreUint32(r.cqHead, head)
}

// abandon takes back the last pending entries, which the kernel refused
// to take, and completes them with its error.
func (r *Ring) abandon(pending uint32, e syscall.Errno, done func(uint64, int32)) {
	for k := range pending {
		idx := (r.tail - pending + k) & r.sqMask
		done(r.sqes[idx].userData, -int32(e))
	}
	r.tail -= pending
	atomic.StoreUint32(r.sqTail, r.tail)
	r.inFlight -= pending
}
