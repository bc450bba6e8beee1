package media

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/pion/transport/v4/replaydetector"
)

// replaySame feeds the same indexes to replayWindow and to pion's own
// sliding window, accepting what each lets through as pion/srtp does
// after authentication, and fails at the first index they judge apart.
func replaySame(t *testing.T, maxIndex uint64, indexes []uint64) {
	t.Helper()
	ours := &replayWindow{maxIndex: maxIndex}
	theirs := replaydetector.New(replayWindowSize, maxIndex).(replaydetector.CheckAccepter)
	for i, idx := range indexes {
		a, b := ours.CheckSeq(idx), theirs.CheckSeq(idx)
		if a.Passed() != b.Passed() {
			t.Fatalf("index %d (#%d): ours passed=%v, pion's passed=%v", idx, i, a.Passed(), b.Passed())
		}
		if la, lb := ours.Accept(a), theirs.Accept(b); la != lb {
			t.Fatalf("index %d (#%d): ours latest=%v, pion's latest=%v", idx, i, la, lb)
		}
	}
}

func TestReplayWindowAsPion(t *testing.T) {
	t.Run("in order with duplicates", func(t *testing.T) {
		var idx []uint64
		for i := range uint64(1000) {
			idx = append(idx, i, i, i-min(i, 3))
		}
		replaySame(t, maxSRTPIndex, idx)
	})
	t.Run("window edges", func(t *testing.T) {
		replaySame(t, maxSRTPIndex, []uint64{0, 0, 5, 64, 65, 1, 2, 127, 128, 129, 0, 1, 2, 300, 172, 173, 171, 300, 428, 300, 301, 1 << 20, 1<<20 - 127, 1<<20 - 128, 1<<20 - 64, 1<<20 - 63})
	})
	t.Run("past the maximum", func(t *testing.T) {
		replaySame(t, maxSRTCPIndex, []uint64{1, maxSRTCPIndex, maxSRTCPIndex + 1, maxSRTCPIndex - 1, 1 << 40})
	})
	t.Run("random reordering", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		var idx []uint64
		base := uint64(70000)
		for range 200000 {
			base += uint64(r.IntN(3))
			jit := uint64(r.IntN(200))
			idx = append(idx, base-min(base, jit))
			if r.IntN(50) == 0 {
				base += uint64(r.IntN(300)) // a jump: loss or a new talk spurt
			}
		}
		replaySame(t, maxSRTPIndex, idx)
	})
}

// FuzzReplayWindow: whatever indexes arrive, replayWindow judges each as
// pion's sliding window does. Indexes are taken 6 bytes at a time, and
// kept near each other so that the window, not only the range, decides.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 200})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var idx []uint64
		for ; len(b) >= 6; b = b[6:] {
			v := binary.BigEndian.Uint64(append([]byte{0, 0}, b[:6]...))
			if v>>40 == 0 {
				v &= 0x3ff // mostly small steps around the window
			}
			idx = append(idx, v)
		}
		replaySame(t, maxSRTPIndex, idx)
		replaySame(t, maxSRTCPIndex, idx)
	})
}

func BenchmarkReplayWindow(b *testing.B) {
	b.Run("ours", func(b *testing.B) {
		w := &replayWindow{maxIndex: maxSRTPIndex}
		for i := range uint64(b.N) {
			w.Accept(w.CheckSeq(i))
		}
	})
	b.Run("pion", func(b *testing.B) {
		w := replaydetector.New(replayWindowSize, maxSRTPIndex).(replaydetector.CheckAccepter)
		for i := range uint64(b.N) {
			w.Accept(w.CheckSeq(i))
		}
	})
}
