//go:build !linux

package media

import "net/netip"

func (s *udpSender) sendFor(_, b []byte, dst netip.AddrPort) error { return s.sendTo(b, dst) }

func registerBuffers(*batchReader, *loop) {}

func unregisterBuffers(*batchReader) {}
