//go:build !linux

package media

import (
	"errors"
	"syscall"
	"time"
)

// Media loops need epoll; elsewhere every socket has a reading goroutine.
type loop struct{ batch *batchReader }

type loopHandler interface{ ready(lp *loop, now time.Time) }

var errNoLoops = errors.New("media loops need Linux")

func engineLoops() ([]*loop, error) { return nil, errNoLoops }

func pickLoop() (*loop, error) { return nil, errNoLoops }

func (*loop) add(int, loopHandler) (int32, error) { return 0, errNoLoops }

func (*loop) remove(int32, int) {}

func socketFD(syscall.Conn) (int, error) { return -1, errNoLoops }

func (*shard) startOnLoop(int) bool { return false }

func (*shard) leaveLoop() {}

// Loops reports the media loops: none here.
func Loops() []LoopStat { return nil }
