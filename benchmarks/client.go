package benchmarks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/mediarelay/mediarelay/media"
)

// signaler sets a call up and tears it down: SIP over WebSocket for
// mediarelay, ng offer/answer for rtpengine.
type signaler interface {
	// Setup delivers the browser's offer and returns the relay's answer; code
	// is the SIP status (or 200 for a successful ng exchange).
	Setup(ctx context.Context, c *call, offer string) (answer string, code int, err error)
	Teardown(ctx context.Context, c *call) error
	Close()
}

// ptime is the packet interval of every call's stream.
const ptime = 20 * time.Millisecond

// Transport is how the load client's calls reach the relay's ICE
// candidates.
type Transport string

const (
	// TransportUDP gives each call its own UDP socket, as a browser's
	// host candidate is.
	TransportUDP Transport = "udp"
	// TransportTCP is ICE-TCP (RFC 6544), as a browser whose network
	// blocks UDP uses it: each call connects to the relay's passive TCP
	// candidate (a connection per call) and sends its checks, DTLS and
	// SRTP on it in RFC 4571 frames.
	TransportTCP Transport = "tcp"
)

// ParseTransport maps a flag value to a Transport.
func ParseTransport(s string) (Transport, error) {
	switch t := Transport(strings.ToLower(s)); t {
	case TransportUDP, TransportTCP:
		return t, nil
	}
	return "", fmt.Errorf("unknown transport %q (want udp or tcp)", s)
}

// Client is the browser-like load client. It does what a browser's WebRTC
// stack does on the wire for one audio stream (its own UDP port per call,
// a full controlling ICE agent, DTLS-SRTP), but in a small engine of its
// own rather than a pion PeerConnection per call: PeerConnections cost the
// load generator as much CPU as the relay it measures.
//
// The engine is a few shards (normally one), each a goroutine locked to an
// OS thread that owns a fixed share of the calls: it waits in epoll on
// their sockets and a 20 ms timerfd, and on each tick encrypts and sends
// the next pre-encoded frame of every call, in place, with no allocation
// and no goroutine hop per packet. Setup (ICE checks, the DTLS handshake)
// runs on the goroutine placing the call; only the handshake is pion's.
type Client struct {
	codec     Codec
	transport Transport
	frames    [][]byte
	cert      tls.Certificate
	fp        string // our a=fingerprint value: "sha-256 AB:CD:..."
	log       *slog.Logger
	// tieBreaker is ICE-CONTROLLING's value. The largest there is: the
	// offerer controls, and a peer that thinks otherwise yields.
	tieBreaker [8]byte

	shards []*shard
	stop   context.CancelFunc
	loops  sync.WaitGroup
	// slots is how many evenly spaced instants of each 20 ms a shard
	// sends at, each call at one of them: 1 sends every call's packet at
	// the same instant.
	slots int

	measuring atomic.Bool
	sent      atomic.Uint64
	recv      atomic.Uint64
}

// call is one browser call.
type call struct {
	idx  int
	id   string // SIP Call-ID (or ng call-id)
	user string // called user: also the key under which the UAS files the call
	sig  signaler
	dlg  *sipDialog
	ws   *sipWS

	sending  atomic.Bool
	dropped  atomic.Bool // the relay ended it, or ICE/DTLS failed after setup
	firstCh  chan struct{}
	firstOne sync.Once

	tInvite, t200, tFirst time.Time
	code                  int
	failReason            string

	mu        sync.Mutex
	stats     *RecvStats
	downDelay []float64 // ms, trunk -> browser one-way
	rtt       []float64 // ms, round trip through the echo

	callMedia
}

// callMedia is a call's transport: socket, ICE, DTLS and SRTP state.
type callMedia struct {
	sh         *shard
	sock       *udpSock // UDP: set once by open, before the call is published
	ufrag, pwd string   // ours
	ssrc       uint32
	pt         uint8

	// Set under sh.mu by applyAnswer; the shard reads them under sh.mu.
	remoteUfrag, remotePwd string
	cands                  []netip.AddrPort
	fpHash, fp             string           // the peer's a=fingerprint
	dtlsClient             bool             // the answer said passive: we send the ClientHello
	tcpCands               []netip.AddrPort // the answer's passive ICE-TCP candidates

	// Under sh.mu.
	tcp       *tcpSock // ICE-TCP: set once connected, instead of sock
	closed    bool
	checks    []pendingCheck  // connectivity checks in flight
	consentTx [12]byte        // the last consent check's transaction
	remote    netip.AddrPort  // the pair's remote end
	connected bool            // sock is connected to remote
	enc, dec  *srtp.Context   // set once DTLS has keyed the call
	iceOK     bool            // a check of ours succeeded: the pair is chosen
	iceDone   chan struct{}   // closed when iceOK is set
	dtlsIn    chan []byte     // DTLS records for the handshake
	dtls      *dtls.Conn      // kept until hangup, for retransmissions
	dtlsConn  *dtlsPacketConn // its transport
	lastCheck time.Time       // last verified STUN or SRTP from the peer
	nextCheck time.Time       // next consent check

	// Owned by the shard's goroutine once the call sends.
	seq   uint16
	ts    uint32
	frame int
	slot  int // the instant of each 20 ms it sends at (Client.slots)
}

// pendingCheck is a connectivity check we sent and retransmit.
type pendingCheck struct {
	tx [12]byte
	to netip.AddrPort
}

// shard is one engine goroutine and the calls it serves (those whose index
// is its own modulo the shard count).
type shard struct {
	cl   *Client
	poll *poller
	tid  atomic.Int64 // the OS thread it is locked to

	// mu is held while the shard handles a batch of ready sockets or a
	// tick (once per batch, not per packet), and by anyone else using a
	// call's socket: a socket is closed only under it, so no descriptor
	// is used after close or, reused, for another call.
	mu       sync.Mutex
	byFD     map[int]*call
	active   []*call // calls sending media
	due      uint64  // timer expiries not yet served
	slot     int     // the send slot the next expiry serves
	nextSlot int     // the slot the next call to send gets

	// ring batches the media sockets' sends and reads of a tick into an
	// io_uring_enter each; nil where io_uring is not available, and then
	// each packet takes a syscall of its own.
	ring *batcher

	rbuf []byte     // receive buffer, decrypted in place
	wbuf []byte     // send buffer, encrypted in place
	rhdr rtp.Header // scratch for SRTP
	whdr rtp.Header
}

// NewClient prepares shards engine goroutines (at least one), the shared
// DTLS certificate and the encoded frames, and starts the engine; its calls
// use transport (UDP if empty). Each shard sends at slots evenly spaced
// instants of every 20 ms, a call at one of them (at least one slot; at
// most 20, a 1 ms tick). Close stops it.
func NewClient(codec Codec, shards, slots int, transport Transport, log *slog.Logger) (*Client, error) {
	if transport == "" {
		transport = TransportUDP
	}
	frames, err := Frames(codec)
	if err != nil {
		return nil, err
	}
	id, err := newDTLSIdentity()
	if err != nil {
		return nil, err
	}
	slots = min(max(slots, 1), maxSendSlots)
	cl := &Client{codec: codec, transport: transport, frames: frames, cert: id.cert, fp: id.fp, log: log, slots: slots}
	binary.BigEndian.PutUint64(cl.tieBreaker[:], ^uint64(0))
	if shards < 1 {
		shards = 1
	}
	for range shards {
		p, err := newPoller(ptime / time.Duration(slots))
		if err != nil {
			cl.closeShards()
			return nil, fmt.Errorf("load client engine: %w", err)
		}
		sh := &shard{cl: cl, poll: p, byFD: map[int]*call{},
			rbuf: make([]byte, 2048), wbuf: make([]byte, 2048)}
		if sh.ring, err = newBatcher(&cl.sent); err != nil {
			sh.ring = nil
			log.Info("load client: a syscall per packet", "err", err)
		}
		cl.shards = append(cl.shards, sh)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cl.stop = cancel
	for _, sh := range cl.shards {
		cl.loops.Add(1)
		go func() {
			defer cl.loops.Done()
			sh.run(ctx)
		}()
	}
	return cl, nil
}

// Close stops the engine and releases its descriptors. Calls must have
// been hung up.
func (cl *Client) Close() {
	cl.stop()
	cl.loops.Wait()
	cl.closeShards()
}

func (cl *Client) closeShards() {
	for _, sh := range cl.shards {
		sh.mu.Lock()
		for _, c := range sh.byFD {
			sh.closeLocked(c)
		}
		sh.mu.Unlock()
		sh.poll.close()
		if sh.ring != nil {
			sh.ring.close()
		}
	}
}

// SetMeasuring turns delay sampling on or off.
func (cl *Client) SetMeasuring(on bool) { cl.measuring.Store(on) }

// CPU is the CPU time the engine's threads have used: the load client's
// own cost while calls are up (setup runs elsewhere; the trunk UAS, which
// shares the process, is not included).
func (cl *Client) CPU() (CPUSample, error) {
	var s CPUSample
	for _, sh := range cl.shards {
		tid := sh.tid.Load()
		if tid == 0 {
			return CPUSample{}, errors.New("load client engine not running")
		}
		t, err := ReadThreadCPU(int(tid))
		if err != nil {
			return CPUSample{}, err
		}
		s.UserTicks += t.UserTicks
		s.SysTicks += t.SysTicks
	}
	s.When = time.Now()
	return s, nil
}

// run is a shard's loop: wait for sockets and the tick, serve them.
func (sh *shard) run(ctx context.Context) {
	// Locked, and never unlocked: the thread ends with the goroutine, so
	// its CPU time in /proc is this shard's and no other goroutine's.
	runtime.LockOSThread()
	sh.tid.Store(int64(gettid()))
	for ctx.Err() == nil {
		// The tick wakes it every 20 ms, so cancellation is seen promptly
		// without a timeout.
		n := sh.poll.wait()
		if n == 0 {
			if ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond) // a broken epoll set: don't spin
			}
			continue
		}
		sh.mu.Lock()
		sh.ready(n)
		for sh.due > 0 {
			k := sh.due
			sh.due = 0
			sh.tick(k)
		}
		sh.mu.Unlock()
	}
}

// ready serves the n descriptors the last wait returned. Under sh.mu.
func (sh *shard) ready(n int) {
	now := time.Now()
	for i := range n {
		fd := sh.poll.readyFD(i)
		if sh.poll.isTimer(fd) {
			sh.due += sh.poll.ticks()
			continue
		}
		if c := sh.byFD[fd]; c != nil {
			sh.read(c, now)
		}
	}
}

// maxDrainPasses bounds how often a tick re-polls the media sockets: a
// socket with more than one datagram queued is reported again, but a
// flood must not keep the shard from sending.
const maxDrainPasses = 4

// drain reads what the calls carrying media have received since the last
// tick. Under sh.mu.
func (sh *shard) drain() {
	for range maxDrainPasses {
		n := sh.poll.pollQuiet()
		if n == 0 {
			return
		}
		now := time.Now()
		if sh.ring != nil {
			sh.readRing(n, now)
			continue
		}
		for i := range n {
			if c := sh.byFD[sh.poll.quietFD(i)]; c != nil {
				sh.read(c, now)
			}
		}
	}
}

// readRing reads one datagram from each of the n ready media sockets
// through the ring, in one io_uring_enter (or one per recvSlots). Under
// sh.mu.
func (sh *shard) readRing(n int, now time.Time) {
	for i := range n {
		c := sh.byFD[sh.poll.quietFD(i)]
		if c == nil || c.sock == nil || c.tcp != nil {
			continue // the polled set holds UDP sockets only
		}
		if !sh.ring.queueRecv(c.sock.fd, c) {
			sh.ring.receive(sh, now)
			sh.ring.queueRecv(c.sock.fd, c)
		}
	}
	sh.ring.receive(sh, now)
}

// maxCatchUp is how many missed 20 ms periods a shard makes up with a
// burst; more than that (the machine is saturated) are skipped, as a
// browser would.
const maxCatchUp = 5

// maxSendSlots bounds Client.slots: a 1 ms tick.
const maxSendSlots = 20

// tick serves the send slots of expired timer expiries: each active call
// of a slot sends its next frame and, when due, a consent check. Then it
// reads what the active calls have received. Sending first keeps each
// call's send time at the same offset from its slot however long reading
// takes, so the load client adds no jitter of its own. Under sh.mu.
func (sh *shard) tick(expired uint64) {
	slots := sh.cl.slots
	n := min(expired, uint64(maxCatchUp*slots))
	t0 := time.Now()
	defer sh.drain()
	for range n {
		s := sh.slot
		sh.slot = (sh.slot + 1) % slots
		for _, c := range sh.active {
			if c.slot != s || !c.sending.Load() {
				continue
			}
			sh.sendFrame(c)
			if t0.After(c.nextCheck) {
				sh.consent(c, t0)
			}
		}
	}
	sh.flushSends()
	if el := time.Since(t0); el > 10*time.Millisecond {
		sh.cl.log.Debug("slow send tick", "calls", len(sh.active), "took", el, "ticks", expired)
	}
}

// sendFrame encrypts the call's next frame in place and sends it, or,
// on a connected UDP socket with a ring, queues it for flushSends.
func (sh *shard) sendFrame(c *call) {
	cl := sh.cl
	f := cl.frames[c.frame]
	c.frame = (c.frame + 1) % len(cl.frames)
	c.seq++
	c.ts += cl.codec.TSPerFrame
	batched := sh.ring != nil && c.tcp == nil && c.connected
	buf := sh.wbuf
	if batched {
		buf = sh.ring.sendBuf()
	}
	p := buf[:12+len(f)]
	p[0] = 0x80 // version 2, no padding, extension or CSRC
	p[1] = c.pt
	binary.BigEndian.PutUint16(p[2:], c.seq)
	binary.BigEndian.PutUint32(p[4:], c.ts)
	binary.BigEndian.PutUint32(p[8:], c.ssrc)
	copy(p[12:], f)
	stampMarker(p[12:], nowNs())
	out, err := c.enc.EncryptRTP(p, p, &sh.whdr)
	if err != nil {
		return
	}
	if batched {
		sh.ring.queueSend(c.sock.fd, out) // counted in cl.sent when it has left
		return
	}
	if c.sendPair(out) == nil {
		cl.sent.Add(1)
	}
}

// flushSends sends the media sendFrame queued, in one io_uring_enter per
// sendSlots packets, and returns when the kernel is done with them. Under
// sh.mu, which keeps the sockets open.
func (sh *shard) flushSends() {
	if sh.ring != nil {
		sh.ring.flushSends()
	}
}

// sendPair sends on the call's selected pair (or the verified address a
// check of the peer's came from). It allocates nothing.
func (c *callMedia) sendPair(b []byte) error {
	switch {
	case c.tcp != nil:
		return c.tcp.send(b)
	case c.connected:
		return c.sock.send(b)
	}
	return c.sock.sendTo(b, c.remote)
}

// sendTo sends to a candidate address: on ICE-TCP the connection has one
// peer, the candidate it was opened to, and to is that.
func (c *callMedia) sendTo(b []byte, to netip.AddrPort) error {
	if c.tcp != nil {
		return c.tcp.send(b)
	}
	return c.sock.sendTo(b, to)
}

// fdNum is the descriptor of the call's socket or connection.
func (c *callMedia) fdNum() int {
	if c.tcp != nil {
		return c.tcp.fdNum()
	}
	return c.sock.fdNum()
}

// localPort is the call's own port.
func (c *callMedia) localPort() int {
	if c.tcp != nil {
		return c.tcp.port
	}
	if c.sock != nil {
		return c.sock.port
	}
	return 0
}

// read takes one datagram from a call's socket (or what its ICE-TCP
// connection holds) and demultiplexes it. Under sh.mu. Level-triggered
// epoll reports the socket again if more are queued. now is when the
// shard woke.
func (sh *shard) read(c *call, now time.Time) {
	if c.tcp != nil {
		sh.readTCP(c, now)
		return
	}
	n, from, at, ok := c.sock.recv(sh.rbuf)
	if !ok || n == 0 {
		return
	}
	sh.arrived(c, sh.rbuf[:n], from, at, now)
}

// arrived handles a datagram read from c's UDP socket, timed by at, the
// kernel's arrival stamp (Unix ns, wall clock; 0 if none). now is when
// the shard read it. Under sh.mu.
func (sh *shard) arrived(c *call, pkt []byte, from netip.AddrPort, at int64, now time.Time) {
	if at != 0 {
		// The arrival, on now's monotonic clock: a packet that waited in
		// the socket for the tick is timed as it arrived.
		now = now.Add(time.Duration(at - now.UnixNano()))
	}
	sh.packet(c, pkt, from, now)
}

// readTCP reads the next RFC 4571 frame from a call's ICE-TCP connection
// and handles it as a datagram: one frame per readiness, as read takes
// one datagram. Under sh.mu.
func (sh *shard) readTCP(c *call, now time.Time) {
	pkt, at, err := c.tcp.recvFrame()
	if err != nil {
		sh.tcpLost(c, err)
		return
	}
	if pkt == nil {
		return
	}
	if at != 0 {
		now = now.Add(time.Duration(at - now.UnixNano()))
	}
	sh.packet(c, pkt, c.tcp.remote, now)
}

// tcpLost takes a call's ICE-TCP connection out of the engine when the
// relay closed it or broke its framing: the call is dropped, as a browser
// whose only pair failed. The descriptor stays open until the call is
// closed, so its number cannot be reused under the call. Under sh.mu.
func (sh *shard) tcpLost(c *call, err error) {
	fd := c.tcp.fdNum()
	sh.poll.del(fd) // level-triggered: a closed connection stays readable
	delete(sh.byFD, fd)
	if c.enc != nil && !c.dropped.Load() {
		c.failReason = "ice-tcp connection lost"
		c.sending.Store(false)
		c.dropped.Store(true)
	}
	sh.cl.log.Debug("ice-tcp connection lost", "call", c.user, "err", err)
}

// packet demultiplexes one datagram (or ICE-TCP frame) from the call's
// transport by its first byte (RFC 7983). Under sh.mu.
func (sh *shard) packet(c *call, pkt []byte, from netip.AddrPort, now time.Time) {
	switch b := pkt[0]; {
	case b < 4:
		sh.stun(c, pkt, from, now)
	case b >= 20 && b <= 63:
		if from != c.remote || c.dtlsIn == nil || (c.dtlsClient && isClientHello(pkt)) {
			return // not the pair, before the answer, or a hello to a client
		}
		select {
		case c.dtlsIn <- append([]byte(nil), pkt...):
		default: // the handshake is not reading: DTLS retransmits
		}
	case b >= 128 && b <= 191:
		if from != c.remote || c.dec == nil || media.IsRTCP(pkt) {
			return // RTCP: we send none and measure none
		}
		sh.media(c, pkt, now)
	}
}

// media decrypts an SRTP packet in place and records it.
func (sh *shard) media(c *call, pkt []byte, now time.Time) {
	out, err := c.dec.DecryptRTP(pkt, pkt, &sh.rhdr)
	if err != nil {
		return
	}
	hl, ok := media.RTPHeaderLen(out)
	if !ok {
		return
	}
	payload := out[hl:]
	if out[0]&0x20 != 0 { // padding, validated by RTPHeaderLen
		payload = payload[:len(payload)-int(out[len(out)-1])]
	}
	c.lastCheck = now // authenticated media shows the peer is there
	cl := sh.cl
	cl.recv.Add(1)
	c.firstOne.Do(func() {
		c.tFirst = now
		close(c.firstCh)
	})
	sendNs, echoOff, marked := readMarker(payload)
	c.mu.Lock()
	c.stats.Update(sh.rhdr.SequenceNumber, sh.rhdr.Timestamp, now)
	if marked && cl.measuring.Load() {
		rx := int64(now.Sub(epoch))
		c.rtt = append(c.rtt, float64(rx-sendNs)/1e6)
		if echoOff > 0 {
			c.downDelay = append(c.downDelay, float64(rx-sendNs-int64(echoOff)*1000)/1e6)
		}
	}
	c.mu.Unlock()
}

// open gives the call its socket in this shard's epoll set. On ICE-TCP
// there is nothing to open yet: the connection goes to a candidate of the
// answer (attachTCP).
func (sh *shard) open(c *call) error {
	if sh.cl.transport == TransportTCP {
		sh.mu.Lock()
		c.sh = sh
		sh.mu.Unlock()
		return nil
	}
	s, err := openUDPSock()
	if err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if err := sh.poll.add(s.fdNum()); err != nil {
		_ = s.close()
		return err
	}
	c.sh, c.sock = sh, s
	sh.byFD[s.fdNum()] = c
	if sh.ring != nil {
		sh.ring.addFile(s.fdNum())
	}
	return nil
}

// attachTCP connects the call to the answer's first passive ICE-TCP
// candidate that accepts, and puts the connection in the shard's epoll
// set; the checks then go to that candidate alone.
func (sh *shard) attachTCP(ctx context.Context, c *call) error {
	var errs []error
	for _, to := range c.tcpCands {
		s, err := dialTCP(ctx, to)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if c.closed {
			_ = s.close()
			return errors.New("call closed")
		}
		if err := sh.poll.add(s.fdNum()); err != nil {
			_ = s.close()
			return err
		}
		c.tcp = s
		c.cands = []netip.AddrPort{to}
		sh.byFD[s.fdNum()] = c
		return nil
	}
	if len(errs) == 0 {
		return errors.New("the answer has no passive ICE-TCP candidate (a=candidate ... tcp ... tcptype passive)")
	}
	return errors.Join(errs...)
}

// closeLocked releases the call's socket (or connection) and DTLS
// session. Under sh.mu.
func (sh *shard) closeLocked(c *call) {
	if c.closed {
		return
	}
	c.closed = true
	for i, x := range sh.active {
		if x == c {
			sh.active = append(sh.active[:i], sh.active[i+1:]...)
			break
		}
	}
	if c.sock != nil {
		fd := c.sock.fdNum()
		delete(sh.byFD, fd)
		sh.poll.del(fd)
		if sh.ring != nil {
			sh.ring.removeFile(fd)
		}
		_ = c.sock.close()
	}
	if c.tcp != nil {
		fd := c.tcp.fdNum()
		delete(sh.byFD, fd)
		sh.poll.del(fd)
		_ = c.tcp.close()
	}
	if c.dtlsConn != nil {
		c.dtlsConn.stop()
	}
}

// write sends a datagram of the call's setup (DTLS) on its pair.
func (sh *shard) write(c *call, b []byte) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	switch {
	case c.closed:
		return net.ErrClosed
	case !c.connected && !c.remote.IsValid():
		return nil // no pair yet: DTLS retransmits
	}
	return c.sendPair(b)
}

// errSetup tags why a call failed, for the failure table.
type errSetup struct {
	reason string
	err    error
}

func (e *errSetup) Error() string { return e.reason + ": " + e.err.Error() }

// place sets a call up: offer, signalling, ICE and DTLS, first audio back.
// It returns once media flows both ways or the call failed.
func (cl *Client) place(ctx context.Context, c *call, mediaTimeout time.Duration) error {
	sh := cl.shards[c.idx%len(cl.shards)]
	c.firstCh = make(chan struct{})
	c.stats = NewRecvStats(cl.codec.ClockRate)
	c.iceDone = make(chan struct{})
	c.ufrag, c.pwd = randToken(4), randToken(12) // 8 and 24 ice-chars (RFC 8839 §5.4)
	c.ssrc = randUint32()
	c.seq, c.ts = uint16(randUint32()), randUint32()
	if err := sh.open(c); err != nil {
		return &errSetup{"local", err}
	}

	c.tInvite = time.Now()
	answer, code, err := c.sig.Setup(ctx, c, cl.offer(c))
	c.code = code
	if err != nil {
		if code >= 300 {
			return &errSetup{fmt.Sprint(code), err}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return &errSetup{"timeout", err}
		}
		return &errSetup{"signalling", err}
	}
	c.t200 = time.Now()
	ap, err := parseAnswer(answer, cl.codec)
	if err != nil {
		return &errSetup{"sdp", err}
	}
	if cl.transport == TransportUDP && len(ap.cands) == 0 {
		return &errSetup{"sdp", errors.New("no IPv4 UDP candidate")}
	}
	sh.applyAnswer(c, ap)

	mctx, cancel := context.WithTimeout(ctx, mediaTimeout)
	defer cancel()
	if cl.transport == TransportTCP {
		if err := sh.attachTCP(mctx, c); err != nil {
			return &errSetup{"ice-tcp", err}
		}
	}
	if err := sh.checkConnectivity(mctx, c); err != nil {
		return &errSetup{"ice/dtls", fmt.Errorf("ice: %w", err)}
	}
	if err := cl.handshake(mctx, sh, c); err != nil {
		return &errSetup{"ice/dtls", err}
	}
	c.sending.Store(true)
	select {
	case <-c.firstCh:
		return nil
	case <-mctx.Done():
		return &errSetup{"no-audio", fmt.Errorf("no audio back within %s: %w", mediaTimeout, mctx.Err())}
	}
}

// applyAnswer installs the peer's parameters for the shard's checks.
func (sh *shard) applyAnswer(c *call, ap answerParams) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c.remoteUfrag, c.remotePwd = ap.ufrag, ap.pwd
	c.cands = ap.cands
	c.tcpCands = ap.tcpCands
	if sh.cl.transport == TransportTCP {
		c.cands = nil // the checks go on the connection attachTCP opens
	}
	c.fpHash, c.fp = ap.fpHash, ap.fp
	c.dtlsClient = ap.setup == setupPassive
	c.pt = ap.pt
	// DTLS is taken from here on. A peer that read our actpass as "be
	// active" may have sent a ClientHello before it answered passive
	// (rtpengine does): that record's sequence numbers would make pion
	// discard the real handshake's as replays.
	c.dtlsIn = make(chan []byte, 16)
}

// handshake runs DTLS on the selected pair in the role the answer gave us,
// keys SRTP from it (RFC 5764 §4.2) and makes the call active.
func (cl *Client) handshake(ctx context.Context, sh *shard, c *call) error {
	raddr := net.UDPAddrFromAddrPort(c.remote) // set before iceDone closed
	pc := &dtlsPacketConn{sh: sh, c: c, raddr: raddr, done: make(chan struct{})}
	cfg := &dtls.Config{
		Certificates:           []tls.Certificate{cl.cert},
		SRTPProtectionProfiles: browserSRTPProfiles,
		ExtendedMasterSecret:   dtls.RequestExtendedMasterSecret,
		InsecureSkipVerify:     true, // self-signed: the fingerprint is the identity
		ClientAuth:             dtls.RequireAnyClientCert,
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verifyFingerprint(c.fpHash, c.fp)(raw, chains)
		if err != nil {
			// pion/dtls closes the connection on this error and waits
			// for its reader: unblock it.
			go pc.stop()
		}
		return err
	}
	var (
		dc  *dtls.Conn
		err error
	)
	if c.dtlsClient {
		dc, err = dtls.Client(pc, raddr, cfg)
	} else {
		dc, err = dtls.Server(pc, raddr, cfg)
	}
	if err != nil {
		return fmt.Errorf("dtls: %w", err)
	}
	// pion/dtls, failing, waits for its reader goroutine, which is
	// blocked in ReadFrom until the transport stops.
	stopOnDone := context.AfterFunc(ctx, pc.stop)
	err = dc.HandshakeContext(ctx)
	stopOnDone()
	if err != nil {
		pc.stop()
		_ = dc.Close()
		return fmt.Errorf("dtls handshake: %w", err)
	}
	enc, dec, err := srtpContexts(dc, c.dtlsClient)
	if err != nil {
		pc.stop()
		_ = dc.Close()
		return err
	}
	now := time.Now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// The session stays up until hangup: as DTLS server our last flight
	// may be lost, and the client then retransmits its own.
	c.dtls, c.dtlsConn = dc, pc
	if c.closed {
		pc.stop()
		return errors.New("call closed during the handshake")
	}
	c.enc, c.dec = enc, dec
	c.lastCheck = now
	c.nextCheck = now.Add(consentInterval())
	c.slot = sh.nextSlot
	sh.nextSlot = (sh.nextSlot + 1) % sh.cl.slots
	sh.active = append(sh.active, c)
	if c.tcp != nil {
		// An ICE-TCP connection stays in the set that wakes the shard:
		// a segment that arrives while an earlier one still waits in the
		// receive queue is merged into it, and the merged data keeps only
		// the newer arrival stamp, so a frame left for the tick would be
		// timed as if it had arrived with the next. Read at once, every
		// frame has its own stamp, at the cost of a wake-up per frame.
		return nil
	}
	if err := sh.poll.hush(c.fdNum()); err != nil {
		return fmt.Errorf("load client engine: %w", err)
	}
	return nil
}

// hangup stops media, ends the call's signalling and closes its transport.
func (cl *Client) hangup(ctx context.Context, c *call) error {
	c.sending.Store(false)
	var err error
	if c.t200 != (time.Time{}) && !c.dropped.Load() {
		err = c.sig.Teardown(ctx, c)
	}
	if sh := c.sh; sh != nil {
		sh.mu.Lock()
		sh.closeLocked(c)
		dc := c.dtls
		sh.mu.Unlock()
		if dc != nil {
			// Its transport is stopped: no close_notify leaves, as when a
			// browser tab goes away; the relay has had the BYE.
			_ = dc.Close()
		}
	}
	return err
}

// opened reports whether place got as far as giving the call a shard
// (and, on UDP, a socket): it may have signalled, so it is hung up.
func (c *call) opened() bool { return c.sh != nil }

// snapshot reads the call's downstream stats.
func (c *call) snapshot() StreamSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats == nil {
		return StreamSnapshot{}
	}
	return c.stats.Snapshot()
}

// takeDelays returns and clears the call's delay samples.
func (c *call) takeDelays() (down, rtt []float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	down, rtt = c.downDelay, c.rtt
	c.downDelay, c.rtt = nil, nil
	return down, rtt
}
