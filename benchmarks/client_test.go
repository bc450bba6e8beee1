//go:build linux

package benchmarks

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/stun/v4"

	"github.com/mediarelay/mediarelay/media"
)

// enginePair is a shard with one active call whose socket is connected to
// a plain UDP peer, keyed with the same SRTP keys both ways, so the peer
// can echo what the call sends.
func enginePair(t testing.TB) (*shard, *call, *net.UDPConn) {
	t.Helper()
	cl := &Client{codec: CodecPCMU, slots: 1, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	frames, err := Frames(CodecPCMU)
	if err != nil {
		t.Fatal(err)
	}
	cl.frames = frames
	p, err := newPoller(ptime)
	if err != nil {
		t.Fatal(err)
	}
	sh := &shard{cl: cl, poll: p, byFD: map[int]*call{}, rbuf: make([]byte, 2048), wbuf: make([]byte, 2048)}
	t.Cleanup(func() {
		sh.mu.Lock()
		for _, c := range sh.byFD {
			sh.closeLocked(c)
		}
		sh.mu.Unlock()
		p.close()
	})
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return sh, addEngineCall(t, sh, peer, 1234), peer
}

// addEngineCall adds an active call with SSRC ssrc to sh, its socket
// connected to peer and keyed as enginePair's.
func addEngineCall(t testing.TB, sh *shard, peer *net.UDPConn, ssrc uint32) *call {
	t.Helper()
	c := &call{user: "t", firstCh: make(chan struct{}), stats: NewRecvStats(8000)}
	c.ssrc, c.pt = ssrc, 0
	if err := sh.open(c); err != nil {
		t.Fatal(err)
	}
	c.remote = peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := c.sock.connect(c.remote); err != nil {
		t.Fatal(err)
	}
	c.connected = true
	key, salt := make([]byte, 16), make([]byte, 12)
	newCtx := func() *srtp.Context {
		ctx, err := srtp.CreateContext(key, salt, srtp.ProtectionProfileAeadAes128Gcm, media.SRTPReplayProtection())
		if err != nil {
			t.Fatal(err)
		}
		return ctx
	}
	c.enc, c.dec = newCtx(), newCtx()
	c.lastCheck, c.nextCheck = time.Now(), time.Now().Add(time.Hour) // no consent checks
	c.sending.Store(true)
	c.slot = len(sh.active) % sh.cl.slots
	sh.active = append(sh.active, c)
	if err := sh.poll.hush(c.sock.fdNum()); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTickSpreadsCallsOverSlots: with four send slots per 20 ms and four
// calls, each timer expiry sends one call's frame, in slot order, and one
// expiry late by a whole period sends each call's frame once.
func TestTickSpreadsCallsOverSlots(t *testing.T) {
	sh, _, peer := enginePair(t)
	sh.cl.slots = 4
	for i := range 3 {
		addEngineCall(t, sh, peer, 1235+uint32(i))
	}
	for i, c := range sh.active {
		c.slot = i
	}
	buf := make([]byte, 2048)
	ssrcOf := func() uint32 {
		t.Helper()
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := peer.Read(buf)
		if err != nil || n < 12 {
			t.Fatalf("peer read: %d bytes, %v", n, err)
		}
		return binary.BigEndian.Uint32(buf[8:12])
	}
	nothingMore := func() {
		t.Helper()
		_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := peer.Read(buf); err == nil {
			t.Fatalf("an extra %d-byte packet", n)
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i := range 4 {
		sh.tick(1)
		if got := ssrcOf(); got != 1234+uint32(i) {
			t.Fatalf("expiry %d sent SSRC %d, want %d", i, got, 1234+i)
		}
		nothingMore()
	}
	sh.tick(4)
	seen := map[uint32]bool{}
	for range 4 {
		seen[ssrcOf()] = true
	}
	if len(seen) != 4 {
		t.Fatalf("a late period sent SSRCs %v, want each of the four once", seen)
	}
	nothingMore()
}

// TestEnginePacketPathsAllocateNothing pins the point of the engine: per
// packet, sending (build, encrypt in place, write) and receiving (read,
// decrypt in place, statistics) allocate nothing.
func TestEnginePacketPathsAllocateNothing(t *testing.T) {
	sh, c, peer := enginePair(t)
	buf := make([]byte, 2048)
	echo := func() {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peer.WriteToUDPAddrPort(buf[:n], netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.sock.port))); err != nil {
			t.Fatal(err)
		}
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if a := testing.AllocsPerRun(200, func() { sh.sendFrame(c) }); a != 0 {
		t.Errorf("sendFrame: %v allocations per packet, want 0", a)
	}
	for range 201 { // AllocsPerRun runs once more to warm up
		echo()
	}
	// Replies wait in the socket: reading them must decrypt and count.
	before := sh.cl.recv.Load()
	a := testing.AllocsPerRun(200, func() {
		sh.mu.Lock()
		sh.read(c, time.Now())
		sh.mu.Unlock()
	})
	if a != 0 {
		t.Errorf("read: %v allocations per packet, want 0", a)
	}
	if got := sh.cl.recv.Load() - before; got != 201 {
		t.Errorf("read %d packets, want 201", got)
	}
	select {
	case <-c.firstCh:
	default:
		t.Error("first packet not signalled")
	}
	if s := c.snapshot(); s.Received != 201 {
		t.Errorf("stats received %d, want 201", s.Received)
	}
}

// TestEngineTickDrains checks the shard's tick: one frame out per active
// call, and replies that wait in the polled set are read on the next.
func TestEngineTickDrains(t *testing.T) {
	sh, c, peer := enginePair(t)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	sh.mu.Lock()
	sh.tick(1)
	sh.mu.Unlock()
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var h rtp.Header
	if _, err := h.Unmarshal(buf[:n]); err != nil || h.SSRC != c.ssrc || h.PayloadType != c.pt {
		t.Fatalf("sent %+v (err %v), want SSRC %d PT %d", h, err, c.ssrc, c.pt)
	}
	if _, err := peer.WriteToUDPAddrPort(buf[:n], netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.sock.port))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sh.cl.recv.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		sh.mu.Lock()
		sh.tick(1)
		sh.mu.Unlock()
	}
	if sh.cl.recv.Load() == 0 {
		t.Fatal("the echoed packet was never read")
	}
}

func TestParseAnswer(t *testing.T) {
	const fp = "sha-256 9A:A9:5C:9B:79:09:D8:BF:F6:B8:96:C1:F3:04:40:EC:23:F8:37:C8:38:07:29:A1:1A:0B:A4:5C:79:66:C8:91"
	// rtpengine's answer, as ngSignaler returns it.
	rtpengine := strings.Join([]string{
		"v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=mediarelay-bench", "c=IN IP4 127.0.0.1", "t=0 0",
		"m=audio 43271 UDP/TLS/RTP/SAVPF 0", "a=mid:0", "a=rtpmap:0 PCMU/8000", "a=sendrecv", "a=rtcp:43271", "a=rtcp-mux",
		"a=setup:passive", "a=fingerprint:" + fp, "a=ptime:20", "a=ice-ufrag:94ZElC2V", "a=ice-pwd:JXL9OD0IFOnzfLYkKdf3MhwaJX",
		"a=candidate:9pmtEst5OP9jva5B 1 UDP 2130706431 127.0.0.1 43271 typ host", "",
	}, "\r\n")
	ap, err := parseAnswer(rtpengine, CodecPCMU)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:43271")}
	if ap.ufrag != "94ZElC2V" || ap.pwd != "JXL9OD0IFOnzfLYkKdf3MhwaJX" || ap.setup != setupPassive || ap.pt != 0 ||
		ap.fpHash != "sha-256" || !strings.HasPrefix(ap.fp, "9A:A9") || len(ap.cands) != 1 || ap.cands[0] != want[0] {
		t.Errorf("rtpengine answer: %+v", ap)
	}

	// The relay's style: ICE-lite, session-level group, opus, setup:active,
	// a candidate of another component and an IPv6 one to skip.
	relay := strings.Join([]string{
		"v=0", "o=mediarelay 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0", "a=ice-lite",
		"m=audio 20000 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1",
		"a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901", "a=fingerprint:" + fp, "a=setup:active", "a=mid:0", "a=sendrecv", "a=rtcp-mux",
		"a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
		"a=candidate:1 2 udp 1 127.0.0.1 20001 typ host",
		"a=candidate:2 1 udp 2 ::1 20000 typ host",
		"a=candidate:3 1 udp 3 127.0.0.1 20000 typ host", "",
	}, "\r\n")
	ap, err = parseAnswer(relay, CodecOpus)
	if err != nil {
		t.Fatal(err)
	}
	if ap.setup != setupActive || ap.pt != 111 || len(ap.cands) != 1 || ap.cands[0] != netip.MustParseAddrPort("127.0.0.1:20000") {
		t.Errorf("relay answer: %+v", ap)
	}

	for name, bad := range map[string]string{
		"no codec":    strings.Replace(rtpengine, "PCMU", "PCMA", 1),
		"rejected":    strings.Replace(rtpengine, "m=audio 43271", "m=audio 0", 1),
		"actpass":     strings.Replace(rtpengine, "setup:passive", "setup:actpass", 1),
		"no ice-pwd":  strings.Replace(rtpengine, "a=ice-pwd:JXL9OD0IFOnzfLYkKdf3MhwaJX\r\n", "", 1),
		"fingerprint": strings.Replace(rtpengine, "sha-256 9A", "sha-256 9", 1),
		"garbage":     "not sdp",
	} {
		if _, err := parseAnswer(bad, CodecPCMU); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

// TestICECheckAnsweredOnce: once a check has succeeded, neither a
// duplicated success response nor the retransmission timer firing at the
// same moment may restart the checks (that closed iceDone twice).
func TestICECheckAnsweredOnce(t *testing.T) {
	sh, _, peer := enginePair(t)
	c := &call{user: "ice", firstCh: make(chan struct{}), stats: NewRecvStats(8000)}
	c.iceDone = make(chan struct{})
	c.ufrag, c.pwd = "localuf", "localpassword0123456789"
	if err := sh.open(c); err != nil {
		t.Fatal(err)
	}
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	sh.applyAnswer(c, answerParams{ufrag: "remoteuf", pwd: "remotepassword01234567", setup: setupPassive, cands: []netip.AddrPort{peerAddr}})
	if done, err := sh.sendChecks(c); done || err != nil {
		t.Fatalf("sendChecks: done %v err %v", done, err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest {
		t.Fatalf("check: %v %v", req.Type, err)
	}
	if err := stun.NewShortTermIntegrity("remotepassword01234567").Check(req); err != nil {
		t.Fatalf("check not signed with the remote password: %v", err)
	}
	var user stun.Username
	if err := user.GetFrom(req); err != nil || user.String() != "remoteuf:localuf" {
		t.Fatalf("USERNAME %q (%v)", user, err)
	}
	if !req.Contains(stun.AttrUseCandidate) || !req.Contains(stun.AttrICEControlling) || !req.Contains(stun.AttrPriority) {
		t.Fatal("check lacks USE-CANDIDATE, ICE-CONTROLLING or PRIORITY")
	}
	resp, err := stun.Build(req, stun.BindingSuccess, &stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		stun.NewShortTermIntegrity("remotepassword01234567"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := peer.WriteToUDPAddrPort(resp.Raw, from); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sh.mu.Lock()
		sh.read(c, time.Now())
		ok := c.iceOK
		sh.mu.Unlock()
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-c.iceDone:
	default:
		t.Fatal("a valid success response did not complete ICE")
	}
	sh.mu.Lock()
	sh.read(c, time.Now()) // the duplicate
	sh.mu.Unlock()
	if done, err := sh.sendChecks(c); !done || err != nil {
		t.Fatalf("sendChecks after success: done %v err %v, want done", done, err)
	}
	if !c.connected || c.remote != peerAddr {
		t.Errorf("pair %v connected %v, want %v", c.remote, c.connected, peerAddr)
	}
}

// engineTCPPair is enginePair over ICE-TCP: the call's connection goes to
// a plain TCP peer, which reads and writes RFC 4571 frames.
func engineTCPPair(t testing.TB) (*shard, *call, net.Conn) {
	t.Helper()
	cl := &Client{codec: CodecPCMU, transport: TransportTCP, slots: 1, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	frames, err := Frames(CodecPCMU)
	if err != nil {
		t.Fatal(err)
	}
	cl.frames = frames
	p, err := newPoller(ptime)
	if err != nil {
		t.Fatal(err)
	}
	sh := &shard{cl: cl, poll: p, byFD: map[int]*call{}, rbuf: make([]byte, 2048), wbuf: make([]byte, 2048)}
	t.Cleanup(func() {
		sh.mu.Lock()
		for _, c := range sh.byFD {
			sh.closeLocked(c)
		}
		sh.mu.Unlock()
		p.close()
	})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := &call{user: "t", firstCh: make(chan struct{}), stats: NewRecvStats(8000)}
	c.ssrc, c.pt = 1234, 0
	if err := sh.open(c); err != nil {
		t.Fatal(err)
	}
	c.tcpCands = []netip.AddrPort{ln.Addr().(*net.TCPAddr).AddrPort()}
	if err := sh.attachTCP(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c.remote, c.connected = c.tcp.remote, true
	key, salt := make([]byte, 16), make([]byte, 12)
	newCtx := func() *srtp.Context {
		ctx, err := srtp.CreateContext(key, salt, srtp.ProtectionProfileAeadAes128Gcm, media.SRTPReplayProtection())
		if err != nil {
			t.Fatal(err)
		}
		return ctx
	}
	c.enc, c.dec = newCtx(), newCtx()
	c.sending.Store(true)
	sh.active = append(sh.active, c)
	return sh, c, peer
}

// TestEngineICETCPAllocatesNothing: over ICE-TCP too, sending a frame
// (build, encrypt, frame, write) and reading one (reassemble, decrypt,
// statistics) allocate nothing, and frames split anywhere by the stream
// are put back together.
func TestEngineICETCPAllocatesNothing(t *testing.T) {
	sh, c, peer := engineTCPPair(t)
	_ = peer.SetDeadline(time.Now().Add(10 * time.Second))
	if a := testing.AllocsPerRun(200, func() { sh.sendFrame(c) }); a != 0 {
		t.Errorf("sendFrame over ICE-TCP: %v allocations per packet, want 0", a)
	}
	// The peer gets 201 frames of 2 + 172 + 16 bytes (GCM tag).
	in := make([]byte, 201*(2+172+16))
	if _, err := io.ReadFull(peer, in); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 201; i++ {
		if l := int(in[i*190])<<8 | int(in[i*190+1]); l != 188 {
			t.Fatalf("frame %d: length %d, want 188", i, l)
		}
	}
	// Echo them back in awkward pieces: a lone length byte, then the rest
	// of a frame with the next one's first bytes.
	for off := 0; off < len(in); {
		n := min(1+off%97, len(in)-off)
		if _, err := peer.Write(in[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	time.Sleep(50 * time.Millisecond) // all of it in the receive queue
	before := sh.cl.recv.Load()
	read := func() {
		sh.mu.Lock()
		sh.read(c, time.Now())
		sh.mu.Unlock()
	}
	if a := testing.AllocsPerRun(200, read); a != 0 {
		t.Errorf("read over ICE-TCP: %v allocations per packet, want 0", a)
	}
	if got := sh.cl.recv.Load() - before; got != 201 {
		t.Errorf("read %d packets, want 201", got)
	}
	if s := c.snapshot(); s.Received != 201 {
		t.Errorf("stats received %d, want 201", s.Received)
	}

	// A frame longer than the relay ever sends breaks the framing: the
	// call is dropped and the connection taken out of the engine.
	if _, err := peer.Write([]byte{0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	read()
	if !c.dropped.Load() || c.sending.Load() {
		t.Error("a bad frame length did not drop the call")
	}
	sh.mu.Lock()
	_, watched := sh.byFD[c.tcp.fdNum()]
	sh.mu.Unlock()
	if watched {
		t.Error("the broken connection is still in the engine")
	}
}

// TestParseAnswerICETCP: the relay's answer carries passive TCP
// candidates beside its UDP ones; active and simultaneous-open ones are not
// connected to.
func TestParseAnswerICETCP(t *testing.T) {
	const fp = "sha-256 9A:A9:5C:9B:79:09:D8:BF:F6:B8:96:C1:F3:04:40:EC:23:F8:37:C8:38:07:29:A1:1A:0B:A4:5C:79:66:C8:91"
	answer := strings.Join([]string{
		"v=0", "o=mediarelay 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0", "a=ice-lite",
		"m=audio 20000 UDP/TLS/RTP/SAVPF 0", "c=IN IP4 127.0.0.1",
		"a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901", "a=fingerprint:" + fp, "a=setup:active", "a=mid:0", "a=sendrecv", "a=rtcp-mux",
		"a=rtpmap:0 PCMU/8000",
		"a=candidate:1 1 udp 2130706431 127.0.0.1 20000 typ host",
		"a=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
		"a=candidate:3 1 tcp 1518280447 127.0.0.1 20002 typ host tcptype so",
		"a=candidate:4 1 tcp 1509949695 127.0.0.1 20000 typ host tcptype passive", "",
	}, "\r\n")
	ap, err := parseAnswer(answer, CodecPCMU)
	if err != nil {
		t.Fatal(err)
	}
	if len(ap.cands) != 1 || ap.cands[0] != netip.MustParseAddrPort("127.0.0.1:20000") {
		t.Errorf("UDP candidates %v", ap.cands)
	}
	if len(ap.tcpCands) != 1 || ap.tcpCands[0] != netip.MustParseAddrPort("127.0.0.1:20000") {
		t.Errorf("passive TCP candidates %v, want 127.0.0.1:20000", ap.tcpCands)
	}
}

// BenchmarkEngineSend is the load client's per-packet send path (build,
// encrypt in place, write) on UDP, on UDP through the shard's io_uring
// (queued, a flush per sendSlots packets, as a tick sends them), and on
// ICE-TCP (plus the RFC 4571 length and copy into the frame), with the
// peer draining what arrives.
func BenchmarkEngineSend(b *testing.B) {
	for _, v := range []struct {
		name string
		pair func(testing.TB) (*shard, *call, *net.UDPConn)
	}{{"udp", enginePair}, {"udp-uring", engineRingPair}} {
		b.Run(v.name, func(b *testing.B) { benchEngineSendUDP(b, v.pair) })
	}
	b.Run("tcp", func(b *testing.B) {
		sh, c, peer := engineTCPPair(b)
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		b.ReportAllocs()
		for b.Loop() {
			sh.sendFrame(c)
		}
	})
}

func benchEngineSendUDP(b *testing.B, pair func(testing.TB) (*shard, *call, *net.UDPConn)) {
	sh, c, peer := pair(b)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := peer.Read(buf); err != nil {
				return
			}
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		sh.sendFrame(c)
	}
	sh.flushSends()
}
