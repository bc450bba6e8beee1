package benchmarks

import (
	"math"
	"os"
	"testing"
	"time"
)

// pkt is one recorded packet: sequence, RTP timestamp, arrival in ms from start.
type pkt struct {
	seq     uint16
	ts      uint32
	arrival float64
}

func feed(s *RecvStats, pkts []pkt) {
	t0 := time.Unix(1700000000, 0)
	for _, p := range pkts {
		s.Update(p.seq, p.ts, t0.Add(time.Duration(p.arrival*float64(time.Millisecond))))
	}
}

func TestJitterRFC3550(t *testing.T) {
	// PCMU at 8 kHz: 160 units per 20 ms. Worked by hand:
	// p1 D=0 -> J=0; p2 arrives 10 ms late: D=+80 -> J=5;
	// p3 back on time: D=-80 -> J=5+(80-5)/16=9.6875 units = 1.2109375 ms.
	s := NewRecvStats(8000)
	feed(s, []pkt{{100, 1000, 0}, {101, 1160, 20}, {102, 1320, 50}, {103, 1480, 60}})
	got := s.Snapshot()
	if want := 9.6875 / 8; math.Abs(got.JitterMs-want) > 1e-9 {
		t.Fatalf("jitter = %v ms, want %v", got.JitterMs, want)
	}
	if got.Expected != 4 || got.Received != 4 {
		t.Fatalf("expected/received = %d/%d, want 4/4", got.Expected, got.Received)
	}
}

func TestJitterSteadyIsZero(t *testing.T) {
	// Opus at 48 kHz, perfectly paced, across a timestamp wrap.
	s := NewRecvStats(48000)
	var pk []pkt
	ts := uint32(math.MaxUint32 - 960*5)
	for i := 0; i < 20; i++ {
		pk = append(pk, pkt{uint16(i), ts, float64(i * 20)})
		ts += 960
	}
	feed(s, pk)
	if j := s.Snapshot().JitterMs; j > 1e-6 {
		t.Fatalf("jitter of a paced stream = %v ms, want 0", j)
	}
}

func TestLossWrapAndDuplicates(t *testing.T) {
	// Recorded around the 16-bit wrap: 65533..65535,0..4 with 65535 and 2
	// lost, 1 duplicated, 3 reordered before 2's slot.
	s := NewRecvStats(8000)
	seqs := []uint16{65533, 65534, 0, 1, 1, 4, 3, 1}
	for i, q := range seqs {
		s.Update(q, uint32(i*160), time.Unix(0, int64(i)*20e6))
	}
	got := s.Snapshot()
	// 65533..65535, 0..4 = 8 expected; distinct received 65533,65534,0,1,4,3 = 6.
	if got.Expected != 8 || got.Received != 6 || got.Duplicates != 2 {
		t.Fatalf("got %+v, want expected 8 received 6 duplicates 2", got)
	}
	if exp, lost := IntervalLoss(StreamSnapshot{}, got); exp != 8 || lost != 2 {
		t.Fatalf("IntervalLoss = %d/%d, want 8/2", exp, lost)
	}
}

func TestIntervalLoss(t *testing.T) {
	s := NewRecvStats(8000)
	for i := 0; i < 100; i++ {
		s.Update(uint16(60000+i), uint32(i*160), time.Unix(0, int64(i)*20e6))
	}
	a := s.Snapshot()
	// 6000 more packets across a wrap, every 100th lost.
	for i := 100; i < 6100; i++ {
		if i%100 == 50 {
			continue
		}
		s.Update(uint16(60000+i), uint32(i*160), time.Unix(0, int64(i)*20e6))
	}
	exp, lost := IntervalLoss(a, s.Snapshot())
	if exp != 6000 || lost != 60 {
		t.Fatalf("interval expected/lost = %d/%d, want 6000/60", exp, lost)
	}
}

func TestPercentile(t *testing.T) {
	// Setup times in ms recorded from a 10-call run.
	xs := []float64{12.1, 9.8, 10.4, 55.0, 11.2, 10.9, 13.3, 10.1, 9.9, 12.7}
	cases := []struct{ p, want float64 }{
		{50, 10.9}, {90, 13.3}, {95, 55.0}, {99, 55.0}, {100, 55.0}, {1, 9.8}, {10, 9.8}, {11, 9.9},
	}
	for _, c := range cases {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 12.1 {
		t.Fatal("Percentile modified its input")
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Fatal("empty percentile should be NaN")
	}
	if d := Summarize(nil); d != (Dist{}) {
		t.Fatalf("empty Summarize = %+v, want zero", d)
	}
	d := Summarize(xs)
	if d.N != 10 || d.P50 != 10.9 || d.P99 != 55 || d.Max != 55 {
		t.Fatalf("Summarize = %+v", d)
	}
}

func TestProcStatAndCPU(t *testing.T) {
	// Recorded from a mediarelay process whose comm holds a space and parens.
	a := []byte("4242 (media relay (x)) S 1 4242 4242 0 -1 4194560 2045 0 0 0 1234 567 0 0 20 0 9 0 8812 1530000000 9000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	b := []byte("4242 (media relay (x)) S 1 4242 4242 0 -1 4194560 2045 0 0 0 2234 867 0 0 20 0 9 0 8812 1530000000 9000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	ua, sa, err := ParseProcStat(a)
	if err != nil || ua != 1234 || sa != 567 {
		t.Fatalf("ParseProcStat = %d %d %v", ua, sa, err)
	}
	ub, sb, _ := ParseProcStat(b)
	t0 := time.Unix(100, 0)
	w := CPUBetween(CPUSample{ua, sa, t0}, CPUSample{ub, sb, t0.Add(20 * time.Second)})
	// 1000 user + 300 sys ticks = 13 s of CPU over 20 s wall.
	if w.UserMicros != 10e6 || w.SysMicros != 3e6 || w.TotalMicros() != 13e6 {
		t.Fatalf("window = %+v", w)
	}
	if c := w.Cores(); math.Abs(c-0.65) > 1e-9 {
		t.Fatalf("cores = %v, want 0.65", c)
	}
	// 100 calls for 20 s = 2000 call-seconds: 6500 µs per call-second.
	pcs := w.PerCallSecond(100)
	if math.Abs(pcs-6500) > 1e-9 {
		t.Fatalf("per call-second = %v, want 6500", pcs)
	}
	if cpc := CallsPerCore(pcs); math.Abs(cpc-153.846153846) > 1e-6 {
		t.Fatalf("calls per core = %v", cpc)
	}
	if _, _, err := ParseProcStat([]byte("garbage")); err == nil {
		t.Fatal("want error on garbage")
	}
}

func TestRSS(t *testing.T) {
	status := []byte("Name:\tmediarelay\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1500000 kB\nVmRSS:\t   51200 kB\nRssAnon:\t   40000 kB\n")
	rss, err := ParseRSS(status)
	if err != nil || rss != 51200*1024 {
		t.Fatalf("ParseRSS = %d %v", rss, err)
	}
	if m := MemPerCall(20<<20, 50<<20, 100); m != float64(30<<20)/100 {
		t.Fatalf("MemPerCall = %v", m)
	}
	if _, err := ParseRSS([]byte("Name:\tx\n")); err == nil {
		t.Fatal("want error without VmRSS")
	}
}

func TestReadSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if _, err := ReadCPU(0); err != nil {
		t.Fatal(err)
	}
	if rss, err := ReadRSS(0); err != nil || rss <= 0 {
		t.Fatalf("ReadRSS(self) = %d %v", rss, err)
	}
}

func TestUDPDrops(t *testing.T) {
	// Recorded /proc/net/udp: the relay owns inodes 5001 and 5003.
	data := []byte(`   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5001 2 0000000000000000 17
  101: 0100007F:9C42 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 5002 2 0000000000000000 900
  102: 0100007F:9C43 0100007F:13C4 01 00000000:00000000 00:00000000 00000000     0        0 5003 2 0000000000000000 3
`)
	n, err := ParseUDPDrops(data, map[string]bool{"5001": true, "5003": true})
	if err != nil || n != 20 {
		t.Fatalf("ParseUDPDrops = %d, %v; want 20", n, err)
	}
	if _, err := ReadUDPDrops(0); err != nil {
		t.Fatalf("ReadUDPDrops(self): %v", err)
	}
}
