package media

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// BenchmarkForwarderRewrite is the per-packet forwarding step on a 172-byte
// G.711 packet (12-byte header, 20 ms payload).
func BenchmarkForwarderRewrite(b *testing.B) {
	f := NewForwarder(ForwarderOptions{PTMap: map[uint8]uint8{0: 8, 101: 96}, SSRC: 1, OnPacket: func(int) {}})
	pkt := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var seq uint16
	var ts uint32
	for b.Loop() {
		seq++
		ts += 160
		pkt[1] = 0
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], ts)
		binary.BigEndian.PutUint32(pkt[8:], 42)
		if !f.Rewrite(pkt) {
			b.Fatal("dropped")
		}
	}
}

// BenchmarkRTPLegLoopback is one packet per op: WriteRTP on one leg,
// ReadRTP on the other, over loopback UDP (two syscalls, latching, header
// validation, receive statistics).
func BenchmarkRTPLegLoopback(b *testing.B) {
	ports := testPorts(b, 2)
	tx := newTestLeg(b, ports, RTPLegOptions{})
	rx := newTestLeg(b, ports, RTPLegOptions{})
	tx.SetRemote(rx.LocalAddr(), rtcpAddrOf(rx))
	rx.SetRemote(tx.LocalAddr(), rtcpAddrOf(tx))
	pkt := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
	buf := make([]byte, 1500)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var seq uint16
	for b.Loop() {
		seq++
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], uint32(seq)*160)
		if err := tx.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := rx.ReadRTP(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRTPLegServe is BenchmarkRTPLegLoopback with the receiving leg
// served by a media loop (the relay's path) instead of read: the send, the
// loop's wake-up and round, latching and statistics, and the handler.
func BenchmarkRTPLegServe(b *testing.B) {
	ports := testPorts(b, 2)
	tx := newTestLeg(b, ports, RTPLegOptions{})
	rx := newTestLeg(b, ports, RTPLegOptions{})
	tx.SetRemote(rx.LocalAddr(), rtcpAddrOf(rx))
	rx.SetRemote(tx.LocalAddr(), rtcpAddrOf(tx))
	got := make(chan struct{}, 1)
	go func() {
		_ = rx.Serve(func([]byte) { got <- struct{}{} })
	}()
	pkt := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var seq uint16
	for b.Loop() {
		seq++
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], uint32(seq)*160)
		if err := tx.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

// BenchmarkRTPLegReadBurst measures the receive side alone, per packet,
// when packets queue at the socket (a reader behind under load): bursts of
// 32 are sent with the timer stopped, then read. recvmmsg is the default
// on Linux; recvmsg is the one-syscall-per-packet fallback.
func BenchmarkRTPLegReadBurst(b *testing.B) {
	for _, batched := range []bool{true, false} {
		name := "recvmmsg"
		if !batched {
			name = "recvmsg"
		}
		b.Run(name, func(b *testing.B) {
			rx := newTestLeg(b, testPorts(b, 1), RTPLegOptions{})
			if !batched {
				rx.batchOnce.Do(func() {}) // ReadRTP then keeps batch nil
				rx.batch = nil
			}
			src := udpListen(b)
			rx.SetRemote(udpAddr(src), netip.AddrPort{})
			pkt := mkRTP(b, 0, 0, 0, 42, false, make([]byte, 160))
			buf := make([]byte, 1500)
			const burst = 32
			var seq uint16
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%burst == 0 {
					b.StopTimer()
					for j := 0; j < burst; j++ {
						seq++
						binary.BigEndian.PutUint16(pkt[2:], seq)
						udpSend(b, src, rx.LocalAddr(), pkt)
					}
					b.StartTimer()
				}
				if _, err := rx.ReadRTP(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// Drain what the last burst left so Close finds nothing odd.
			for rem := b.N % burst; rem != 0 && rem < burst; rem++ {
				rx.ReadRTP(buf)
			}
		})
	}
}
