package media

import (
	"encoding/binary"
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
