//go:build !linux

package media

import (
	"net/netip"
	"time"
)

func (s *udpSender) sendFor(_, b []byte, dst netip.AddrPort) error { return s.sendTo(b, dst) }

func packetTime([]byte) time.Time { return time.Now() }

func scratchFor([]byte) (plain, sealed []byte, now time.Time) { return nil, nil, time.Now() }

func registerBuffers(*batchReader, *loop) {}

func unregisterBuffers(*batchReader) {}
