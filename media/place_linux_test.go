package media

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/testenv"
)

// loadLoop makes placement see lp as busy (load share) from the next
// pickLoop on, as if its rounds had taken that share of the last second.
func loadLoop(lp *loop, share float64) {
	placeMu.Lock()
	defer placeMu.Unlock()
	now := time.Now().UnixNano()
	lp.sampleAt = now - int64(time.Second)
	lp.sampleBusy = lp.busy.Load() - int64(share*float64(time.Second))
}

// twoLoops returns the media loops, skipping where there is only one
// (GOMAXPROCS=1): placement then has no choice to make.
func twoLoops(t *testing.T) []*loop {
	t.Helper()
	loops, err := engineLoops()
	if err != nil {
		testenv.Missing(t, "no media loops", err)
	}
	if len(loops) < 2 {
		t.Skipf("one media loop (GOMAXPROCS=%d): nothing to place", len(loops))
	}
	return loops
}

// shardLoop returns the loop serving s.
func shardLoop(s *shard) *loop {
	s.place.Lock()
	defer s.place.Unlock()
	return s.lp
}

// TestLoopsFollowLoad: while the first media loop has room, every new SIP
// leg and every shard of the WebRTC port is served by it (one wake serves
// them all); once it is busy, new legs go to the second loop, which takes
// its own shard with it; once the second loop serves nothing but its shard
// again, the shard goes back. A call whose browser sits on the moving
// shard keeps its media both ways throughout.
func TestLoopsFollowLoad(t *testing.T) {
	loops := twoLoops(t)
	first, second := loops[0], loops[1]
	// Loads are set, not sampled: rounds are timed by the wall clock, and
	// on a loaded machine (or under -race) a nearly idle loop can read as
	// busy.
	loadLoop(first, 0)
	loadLoop(second, 0)
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, s := range w.shards {
		if got := shardLoop(s); got != first {
			t.Fatalf("idle relay: shard %d is on loop %p, want the first loop %p", i, got, first)
		}
	}

	// A call whose browser the kernel hashed to the second loop's shard.
	var c *browserCall
	for range 20 {
		c = callingBrowser(t, w)
		if c.leg.dst.Load().s == w.shards[1] {
			break
		}
		c.leg.Close()
		c.pc.Close()
		c = nil
	}
	if c == nil {
		t.Fatal("20 browsers, none on the second shard")
	}
	c.bothWays(t, 20)

	// Idle: a new SIP leg joins the first loop.
	loadLoop(first, 0)
	loadLoop(second, 0)
	ports := testPorts(t, 2)
	idle := newTestLeg(t, ports, RTPLegOptions{})
	go idle.Serve(func([]byte) {})
	pollUntil(t, "the idle leg on a loop", func() bool { return servedBy(idle) != nil })
	if got := servedBy(idle); got != first {
		t.Fatalf("idle relay: SIP leg on loop %p, want the first %p", got, first)
	}

	// Busy: the next leg goes to the second loop, and the second shard
	// follows it while media flows.
	loadLoop(first, 0.9)
	busy := newTestLeg(t, ports, RTPLegOptions{})
	go busy.Serve(func([]byte) {})
	pollUntil(t, "the busy leg on a loop", func() bool { return servedBy(busy) != nil })
	if got := servedBy(busy); got != second {
		t.Fatalf("first loop busy: SIP leg on loop %p, want the second %p", got, second)
	}
	if got := shardLoop(w.shards[1]); got != second {
		t.Fatalf("second loop awake: its shard is on %p, want %p", got, second)
	}
	if got := shardLoop(w.shards[0]); got != first {
		t.Fatalf("second loop awake: the first shard moved to %p", got)
	}
	c.bothWays(t, 20)

	// The busy leg ends and the first loop has room again: the next
	// placement puts the second loop back to sleep and its shard returns.
	busy.Close()
	pollUntil(t, "the busy leg off its loop", func() bool { return servedBy(busy) == nil })
	loadLoop(first, 0)
	idle.Close()
	if _, err := pickLoop(); err != nil {
		t.Fatal(err)
	}
	if got := shardLoop(w.shards[1]); got != first {
		t.Fatalf("second loop idle again: its shard is on %p, want the first loop %p", got, first)
	}
	c.bothWays(t, 20)
}

// TestShardMovesUnderTraffic: a shard moved back and forth between loops
// while its browser sends loses no packet that reached the socket and
// delivers none twice (run it with -race).
func TestShardMovesUnderTraffic(t *testing.T) {
	loops := twoLoops(t)
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := callingBrowser(t, w)
	s := w.shards[0]

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Point the shard's home at each loop in turn, as placement
			// would when they wake.
			s.place.Lock()
			s.home = loops[i%2]
			s.place.Unlock()
			placeMu.Lock()
			loops[1].awake = true
			placeMu.Unlock()
			if !s.settle() {
				t.Error("shard left without a loop")
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	c.bothWays(t, 200)
	close(stop)
	wg.Wait()
	// Leave placement as it found it: the shard home on the first loop,
	// the second asleep.
	s.place.Lock()
	s.home = loops[0]
	s.place.Unlock()
	s.settle()
	placeMu.Lock()
	loops[1].awake = false
	placeMu.Unlock()
}

// browserCall is a connected pion browser sending PCMU to a leg.
type browserCall struct {
	pc    *webrtc.PeerConnection
	leg   *WebRTCLeg
	track *webrtc.TrackLocalStaticRTP
	got   <-chan []byte

	fromBrowser chan []byte // the leg's ReadRTP, read by one goroutine
	seq         uint16
}

// bothWays sends n packets each way and checks each arrives, in order,
// with its payload: mediaBothWays for a call that exchanges more than once.
func (c *browserCall) bothWays(t *testing.T, n int) {
	t.Helper()
	if c.fromBrowser == nil {
		c.fromBrowser = make(chan []byte, 512)
		go func() {
			buf := make([]byte, 1500)
			for {
				k, err := c.leg.ReadRTP(buf)
				if err != nil {
					close(c.fromBrowser)
					return
				}
				c.fromBrowser <- append([]byte(nil), buf[:k]...)
			}
		}()
		for c.leg.sink.Load() == nil {
			time.Sleep(time.Millisecond)
		}
	}
	base := c.seq
	c.seq += uint16(n)
	for i := range n {
		seq := base + uint16(i)
		payload := bytes.Repeat([]byte{byte(seq)}, 160)
		if err := c.track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 7}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		var p []byte
		select {
		case p = <-c.fromBrowser:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d packets from the browser arrived", i, n)
		}
		if want := bytes.Repeat([]byte{byte(base + uint16(i))}, 160); !bytes.Equal(p[12:], want) {
			t.Fatalf("packet %d from the browser: payload %x..., want %x...", i, p[12:16], want[:4])
		}
	}
	pkt := make([]byte, 12+160)
	pkt[0] = 0x80
	for i := range n {
		seq := base + uint16(i)
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], uint32(seq)*160)
		copy(pkt[12:], bytes.Repeat([]byte{0x40 ^ byte(seq)}, 160))
		if err := c.leg.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		select {
		case p := <-c.got:
			if want := bytes.Repeat([]byte{0x40 ^ byte(base+uint16(i))}, 160); !bytes.Equal(p, want) {
				t.Fatalf("packet %d to the browser: payload %x..., want %x...", i, p[:4], want[:4])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d packets reached the browser", i, n)
		}
	}
}

func callingBrowser(t *testing.T, w *WebRTC) *browserCall {
	t.Helper()
	pc := newBrowserPC(t, webrtc.NetworkTypeUDP4)
	track, got := sendingTrack(t, pc)
	return &browserCall{pc: pc, leg: connect(t, w, pc), track: track, got: got}
}

// servedBy returns the loop serving l's RTP socket, or nil.
func servedBy(l *RTPLeg) *loop {
	l.regMu.Lock()
	defer l.regMu.Unlock()
	return l.reg
}

// TestPlacementRacesClose: WebRTC ports opening and closing while
// placement wakes and puts to sleep the loops their shards belong to
// leave no socket on any loop (run it with -race).
func TestPlacementRacesClose(t *testing.T) {
	loops := twoLoops(t)
	before := make([]int32, len(loops))
	for i, lp := range loops {
		before[i] = lp.sockets.Load()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			loadLoop(loops[0], float64(i%2)) // busy, idle, busy...
			if _, err := pickLoop(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 30 {
		w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", Shards: 2})
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	close(stop)
	wg.Wait()
	loadLoop(loops[0], 0)
	if _, err := pickLoop(); err != nil { // lets the second loop sleep again
		t.Fatal(err)
	}
	for i, lp := range loops {
		if n := lp.sockets.Load(); n != before[i] {
			t.Errorf("loop %d serves %d sockets, %d before the ports opened and closed", i, n, before[i])
		}
	}
}
