//go:build linux

package media

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop is one core's share of the media: one goroutine waits on an epoll
// set holding a shard of the shared WebRTC port and the SIP-leg sockets
// pinned to it, and serves every ready socket in one round. Idle, it parks
// in Go's netpoller (the epoll descriptor is itself pollable); busy, it
// goes from round to round without parking, each round taking everything
// that queued during the last. (A coalescing sleep between rounds was
// measured: it added delay and saved no CPU, since under load rounds fill
// by themselves.) Handlers run on the loop's goroutine with mu held, so
// removing one waits for a round in progress.
type loop struct {
	epfd   int
	ep     syscall.RawConn
	epFile *os.File

	events []unix.EpollEvent
	found  int
	// batch receives for the SIP legs on the loop: one set of buffers
	// per core instead of one per call.
	batch  *batchReader
	pollFn func(uintptr) bool // the method value, made once: no allocation per round
	// out holds the round's sends for one io_uring_enter; nil where
	// io_uring is not available, and then each send goes at once.
	out *outbox
	// tcpIn receives the ICE-TCP connections on the loop: one buffer per
	// core, registered like the batch buffers, so that frames forwarded
	// from it leave with the round's other sends.
	tcpIn []byte
	// plain and sealed are the round's scratch for a leg's write of a
	// packet the loop is handling (scratchFor).
	plain, sealed []byte

	mu    sync.Mutex
	slots []loopHandler
	free  []int32

	// now is when the current round started, for packetTime: one clock
	// read per round instead of several per packet. Only the loop's
	// goroutine touches it.
	now time.Time

	// For pickLoop: time spent in rounds, and how many sockets (and of
	// them shards) the loop serves.
	busy    atomic.Int64 // ns
	sockets atomic.Int32
	shards  atomic.Int32
	// Under placeMu.
	awake      bool     // serving sockets of its own; the first loop always is
	homes      []*shard // the WebRTC port's shards whose home this loop is
	sampleAt   int64    // unix ns of the last load sample
	sampleBusy int64    // busy then
	load       float64  // share of the wall clock in rounds over the last sample
}

// loopHandler is a socket's owner on a loop.
type loopHandler interface {
	// ready is called when the socket is readable. It must read with
	// MSG_DONTWAIT until the socket is empty (or a batch comes back
	// short), and must not block.
	ready(lp *loop, now time.Time)
}

var (
	loopsOnce sync.Once
	loopsAll  []*loop
	loopsErr  error
)

// engineLoops returns the process's media loops, one per core, started
// on first use. They live as long as the process; idle, they cost nothing.
func engineLoops() ([]*loop, error) {
	loopsOnce.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			lp, err := newLoop()
			if err != nil {
				loopsErr = err
				return
			}
			lp.awake = len(loopsAll) == 0
			loopsAll = append(loopsAll, lp)
			go lp.run()
		}
	})
	return loopsAll, loopsErr
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("media loop: epoll: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("media loop: epoll: %w", err)
	}
	lp := &loop{epfd: epfd, events: make([]unix.EpollEvent, 256), batch: newBatchBuffers(readBatchSize),
		tcpIn: make([]byte, tcpLoopBuf), plain: make([]byte, forwardBufSize), sealed: make([]byte, forwardBufSize+64)}
	lp.epFile = os.NewFile(uintptr(epfd), "media-epoll")
	if lp.ep, err = lp.epFile.SyscallConn(); err != nil {
		lp.close()
		return nil, fmt.Errorf("media loop: %w", err)
	}
	lp.pollFn = lp.poll
	if lp.out, err = newOutbox(); err != nil {
		lp.out = nil // each datagram is sent on its own
		slog.Info("media loop: sends are not batched", "err", err)
	} else {
		o := lp.out
		registerMemory(unsafe.Pointer(&o.rbufs[0][0]), unsafe.Pointer(&o.rbufs[inboxSlots-1][0]), readBufSize, lp)
	}
	registerBuffers(lp.batch, lp)
	registerMemory(unsafe.Pointer(&lp.tcpIn[0]), unsafe.Pointer(&lp.tcpIn[0]), uintptr(len(lp.tcpIn)), lp)
	return lp, nil
}

func (lp *loop) close() {
	_ = lp.epFile.Close()
}

// add puts fd in the loop's set with h as its handler and returns the
// slot that remove takes.
func (lp *loop) add(fd int, h loopHandler) (int32, error) {
	var slot int32
	err := lp.addAt(fd, h, &slot)
	return slot, err
}

// addAt is add for a handler that needs its slot from its first ready
// call on: the slot is stored at *at, under the loop's lock, before fd
// can become ready.
func (lp *loop) addAt(fd int, h loopHandler, at *int32) error {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	var slot int32
	if n := len(lp.free); n > 0 {
		slot, lp.free = lp.free[n-1], lp.free[:n-1]
	} else {
		slot = int32(len(lp.slots))
		lp.slots = append(lp.slots, nil)
	}
	*at = slot
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		lp.free = append(lp.free, slot)
		return fmt.Errorf("media loop: add socket: %w", err)
	}
	lp.slots[slot] = h
	lp.sockets.Add(1)
	if lp.out != nil {
		lp.out.addFile(slot, fd)
	}
	return nil
}

// remove takes fd out of the set. When it returns, the handler is not
// running and will not be called again, so the socket may be closed.
func (lp *loop) remove(slot int32, fd int) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.removeHeld(slot, fd)
}

// removeHeld is remove for a handler that takes itself off the loop from
// its own ready call, where the loop already holds mu.
func (lp *loop) removeHeld(slot int32, fd int) {
	_ = unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	if lp.out != nil {
		lp.out.removeFile(slot, fd)
	}
	lp.slots[slot] = nil
	lp.free = append(lp.free, slot)
	lp.sockets.Add(-1)
}

// watch sets the readiness fd's handler is called for: readable, and
// writable too while the handler has output the socket did not take.
// Safe from any goroutine while fd is on the loop (epoll_ctl is).
func (lp *loop) watch(slot int32, fd int, writable bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}
	if writable {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return fmt.Errorf("media loop: watch socket: %w", err)
	}
	return nil
}

// run serves rounds until the loop is closed.
func (lp *loop) run() {
	for {
		// Parks in the netpoller only when nothing is ready.
		if err := lp.ep.Read(lp.pollFn); err != nil {
			return
		}
		if lp.found < 0 {
			time.Sleep(10 * time.Millisecond) // a persistent epoll error: don't spin
			continue
		}
		now := time.Now()
		lp.now = now
		lp.mu.Lock()
		for i := range lp.found {
			h := lp.slots[lp.events[i].Fd]
			if h == nil {
				continue
			}
			if d, ok := h.(datagramHandler); ok && lp.out != nil {
				lp.out.wantRecv(d, now)
				continue
			}
			h.ready(lp, now)
		}
		if lp.out != nil {
			lp.out.receive(now)
			lp.out.flush()
		}
		lp.mu.Unlock()
		lp.busy.Add(int64(time.Since(now)))
	}
}

// poll takes the ready events without blocking; false makes RawConn.Read
// wait in the netpoller for the epoll set to become readable.
func (lp *loop) poll(fd uintptr) bool {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&lp.events[0])), uintptr(len(lp.events)), 0, 0, 0)
	switch {
	case e == 0 && n > 0:
		lp.found = int(n)
		return true
	case e == 0, e == unix.EINTR, e == unix.EAGAIN:
		return false
	default:
		lp.found = -1
		return true
	}
}

// socketFD returns the descriptor of c for the loop's raw reads and
// writes. The caller keeps c open while it uses the number.
func socketFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}
