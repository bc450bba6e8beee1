//go:build linux

package media

import (
	"slices"
	"sync"
	"time"
)

// Placement: which media loop a new socket goes on. The loops are one per
// core, but a loop that wakes costs a round's fixed price (the epoll wait,
// the ring enter, the scheduler parking it again) whatever the round
// carries. So under light load one loop serves every call, its rounds
// fill, and one goroutine wakes instead of one per core; a further loop
// takes new sockets only once the loops before it are busy. Measured at
// 200 calls on two cores, one loop cost 18 % less CPU per call than two.
//
// The shared WebRTC port has a socket (shard) per loop, and the kernel
// hashes each browser to one of them, so the shards cannot follow the
// calls; instead a shard is served by its home loop while that loop is
// awake, and by the first loop while it sleeps. A loop wakes when it takes
// its first socket and sleeps again once only its shards are left on it.

const (
	// loopBusy is the share of the wall clock a loop may spend in rounds
	// and still take new sockets while a later loop could. Rounds are
	// timed by the wall clock, so time the loop's thread was preempted
	// counts as busy: on a machine shared with other work (the two cores
	// of a benchmark, say) a loop at a quarter of a core's work read 0.5
	// while calls were being set up. At 0.7 a loop still has room for
	// bursts, and its rounds stay well under a millisecond.
	loopBusy = 0.7
	// loadWindow is how long a load sample spans at least.
	loadWindow = time.Second
)

// placeMu guards the loops' placement fields (awake, homes, the load
// sample). It is never held while a loop's mu is taken.
var placeMu sync.Mutex

// pickLoop returns the loop a new socket goes on: the first loop that is
// not busy, or the least loaded when all are.
func pickLoop() (*loop, error) {
	all, err := engineLoops()
	if err != nil {
		return nil, err
	}
	lp, settle := place(all, time.Now())
	for _, s := range settle {
		s.settle()
	}
	return lp, nil
}

// place picks the loop and returns the shards that must change loops: a
// waking loop's own, and those of later loops left with nothing else.
func place(all []*loop, now time.Time) (*loop, []*shard) {
	placeMu.Lock()
	defer placeMu.Unlock()
	var pick, least *loop
	for _, lp := range all {
		lp.sample(now)
		if pick == nil && lp.load < loopBusy {
			pick = lp
		}
		if least == nil || lp.load < least.load {
			least = lp
		}
	}
	if pick == nil {
		pick = least
	}
	var settle []*shard
	for i, lp := range all {
		switch {
		case i == 0:
		case lp == pick:
			if !lp.awake {
				lp.awake = true
				settle = append(settle, lp.homes...)
			}
		case lp.awake && pick == all[0] && lp.sockets.Load() == lp.shards.Load():
			lp.awake = false
			settle = append(settle, lp.homes...)
		}
	}
	return pick, slices.Clip(settle)
}

// sample refreshes the loop's load once per loadWindow. Under placeMu.
func (lp *loop) sample(now time.Time) {
	ns := now.UnixNano()
	if ns-lp.sampleAt < int64(loadWindow) {
		return
	}
	busy := lp.busy.Load()
	if lp.sampleAt != 0 {
		lp.load = float64(busy-lp.sampleBusy) / float64(ns-lp.sampleAt)
	}
	lp.sampleAt, lp.sampleBusy = ns, busy
}

// servingHome returns the loop that serves a shard whose home is home.
func servingHome(all []*loop, home *loop) *loop {
	placeMu.Lock()
	defer placeMu.Unlock()
	if home.awake {
		return home
	}
	return all[0]
}

// startOnLoop makes loop i%len the shard's home and puts it on the loop
// serving that home. False when there are no loops to serve it.
func (s *shard) startOnLoop(i int) bool {
	all, err := engineLoops()
	if err != nil || s.batch == nil || s.sock.fd < 0 {
		return false
	}
	s.fd = s.sock.fd
	home := all[i%len(all)]
	s.place.Lock()
	s.home = home
	s.place.Unlock()
	placeMu.Lock()
	home.homes = append(home.homes, s)
	placeMu.Unlock()
	if !s.settle() {
		// Served by a goroutine of its own from now on: a placement
		// already under way must not put it on a loop as well.
		s.place.Lock()
		s.closed = true
		s.place.Unlock()
		s.forget()
		return false
	}
	return true
}

// settle moves the shard to the loop placement wants it on now. False if
// no loop took it.
func (s *shard) settle() bool {
	s.place.Lock()
	defer s.place.Unlock()
	if s.home == nil || s.closed {
		return s.lp != nil
	}
	all, _ := engineLoops()
	to := servingHome(all, s.home)
	if to == s.lp {
		return true
	}
	from := s.lp
	if from != nil {
		from.remove(s.slot, s.fd) // waits for a round in progress
		from.shards.Add(-1)
		unregisterBuffers(s.batch)
		s.lp = nil
	}
	// The buffers are filled on the new loop from now on: register them
	// before add, since ready may run at once.
	for _, lp := range []*loop{to, from} {
		if lp == nil {
			continue
		}
		registerBuffers(s.batch, lp)
		slot, err := lp.add(s.fd, s)
		if err == nil {
			s.lp, s.slot = lp, slot
			lp.shards.Add(1)
			return true
		}
		unregisterBuffers(s.batch)
		s.w.log.Error("webrtc port: shard not moved to another media loop", "err", err)
	}
	s.w.log.Error("webrtc port: shard left without a media loop; its browsers' media stops")
	return false
}

// leaveLoop takes the shard off its loop for good.
func (s *shard) leaveLoop() {
	s.place.Lock()
	s.closed = true
	if s.lp != nil {
		s.lp.remove(s.slot, s.fd)
		s.lp.shards.Add(-1)
		unregisterBuffers(s.batch)
		s.lp = nil
	}
	s.place.Unlock()
	s.forget()
}

// forget takes the shard off its home loop's list.
func (s *shard) forget() {
	s.place.Lock()
	home := s.home
	s.place.Unlock()
	if home == nil {
		return
	}
	placeMu.Lock()
	home.homes = slices.DeleteFunc(home.homes, func(o *shard) bool { return o == s })
	placeMu.Unlock()
}

// Loops reports the media loops, for metrics: how long each spent in
// rounds and how many sockets it serves. Nil where there are none.
func Loops() []LoopStat {
	all, err := engineLoops()
	if err != nil {
		return nil
	}
	st := make([]LoopStat, len(all))
	for i, lp := range all {
		st[i] = LoopStat{Busy: time.Duration(lp.busy.Load()), Sockets: int(lp.sockets.Load())}
	}
	return st
}
