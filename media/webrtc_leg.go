package media

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// PacketSource is a leg that delivers its packets by calling a handler on
// the goroutine that received them, instead of being read. Path.Start uses
// it in place of ReadRTP, so a packet crosses no goroutine on its way
// through the relay, and an established call keeps no goroutine of its own.
type PacketSource interface {
	// Attach calls h with each packet (valid only during the call) until
	// the source closes or stops serving h; then it calls done, once, on a
	// goroutine of its own, with an error wrapping net.ErrClosed (or why
	// it stopped). When done runs, h is no longer running and will not be
	// called. Attach itself returns at once.
	Attach(h func(pkt []byte), done func(error))
}

// Serve attaches h to src and waits until src is done with it, returning
// done's error: Attach for callers with a goroutine to spare (tests,
// tools).
func Serve(src PacketSource, h func(pkt []byte)) error {
	ch := make(chan error, 1)
	src.Attach(h, func(err error) { ch <- err })
	return <-ch
}

// dtlsLinger is how long a leg keeps its DTLS session after the handshake,
// to answer a peer that retransmits its last flight because ours was lost.
const dtlsLinger = 10 * time.Second

// WebRTCLeg is the browser side of a call: ICE-lite on the shared port, a
// DTLS handshake for the SRTP keys, then SRTP in place on the shard that
// receives the browser's packets. It implements WriteRTP like the RTP leg,
// and delivers received packets through Attach (PacketSource).
type WebRTCLeg struct {
	w   *WebRTC
	log *slog.Logger

	// Audio is the negotiated audio stream: for a leg made by Answer, our
	// answer (the chosen codec with the browser's payload type, and
	// telephone-event if offered); for Offer, the browser's answer.
	Audio sdp.Audio

	ufrag, pwd  string
	remoteUfrag atomic.Pointer[string]
	local       string // our SDP

	// The browser's DTLS identity and our role, from its SDP.
	fpHash, fp string
	dtlsClient bool

	// e2e: the leg forwards DTLS and SRTP/SRTCP opaquely (e2e.go); set
	// before the leg is published, never changed. far is then what our
	// SDP announces of the far end (its fingerprint instead of ours).
	e2e bool
	far E2EPeer

	dst         atomic.Pointer[legDest] // the selected pair
	haveDst     chan struct{}
	dstOnce     sync.Once
	lastConsent atomic.Int64 // unix ns of the last verified check
	srtp        atomic.Pointer[srtpSession]
	dtlsIn      chan []byte
	dtlsDone    atomic.Bool
	started     atomic.Bool // the handshake goroutine runs

	// rmu serialises the receive path (SRTP replay state, statistics):
	// a leg's packets normally all reach one shard, but a browser moving
	// to another pair may briefly send from two.
	rmu  sync.Mutex
	sink atomic.Pointer[sinkRef]
	// serveMu guards served, the handler Attach gave sink, until the leg
	// closes.
	serveMu sync.Mutex
	served  *attached

	readOnce sync.Once
	readQ    chan []byte // ReadRTP's queue, made on first use

	connected chan struct{}
	failed    chan struct{}
	closed    chan struct{}
	connOnce  sync.Once
	failOnce  sync.Once
	failCause string // written once before failed is closed
	closeOnce sync.Once
	isDown    atomic.Bool

	rx         recvStats
	dropped    atomic.Uint64
	rtcpState            // SR/RR to the browser, and what it reports
	nextReport time.Time // janitor-owned
	wplain     []byte    // WriteRTP's scratch off a loop, made on first use; under the session's wmu

	connectTimeout time.Duration
}

// legDest is where a leg sends: the selected pair's remote address, from
// the shard that verified it, or the ICE-TCP connection it was verified on.
type legDest struct {
	s    *shard
	tcp  *tcpPair // set for a pair over ICE-TCP; s is nil then
	addr netip.AddrPort
}

// send writes one datagram on the pair: a raw send on the shard's socket
// (the media path), or one RFC 4571 frame on the TCP connection.
func (d *legDest) send(b []byte) error {
	if d.tcp != nil {
		return d.tcp.send(b)
	}
	return d.s.out.sendTo(b, d.addr)
}

// sendFor is send for media forwarded from in: on the UDP port it may
// leave with the rest of its media loop's round.
func (d *legDest) sendFor(in, b []byte) error {
	if d.tcp != nil {
		return d.tcp.send(b)
	}
	return d.s.out.sendFor(in, b, d.addr)
}

// sendSlow is send for what is not media (DTLS, RTCP reports), from any
// goroutine, in the shape of a net.Conn write.
func (d *legDest) sendSlow(b []byte) (int, error) {
	if err := d.send(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// same reports whether d is the pair of a check from addr over tcp.
func (d *legDest) same(addr netip.AddrPort, tcp *tcpPair) bool {
	return d.addr == addr && d.tcp == tcp
}

type sinkRef struct{ h func([]byte) }

func (w *WebRTC) newLeg(clock uint32) (*WebRTCLeg, error) { return w.newLegMode(clock, E2EPeer{}) }

// newLegMode is newLeg; a far end with a fingerprint makes an end-to-end
// leg (set before the leg can receive a check).
func (w *WebRTC) newLegMode(clock uint32, far E2EPeer) (*WebRTCLeg, error) {
	pwd, err := iceToken(24)
	if err != nil {
		return nil, err
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	l := &WebRTCLeg{
		w:              w,
		log:            w.log,
		pwd:            pwd,
		rtcpState:      rtcpState{ssrc: binary.BigEndian.Uint32(rnd[:]), clock: clock, cname: "mediarelay"},
		haveDst:        make(chan struct{}),
		dtlsIn:         make(chan []byte, 16),
		connected:      make(chan struct{}),
		failed:         make(chan struct{}),
		closed:         make(chan struct{}),
		rx:             recvStats{clockRate: uint64(clock), epoch: time.Now()},
		connectTimeout: w.opts.ConnectTimeout,
		e2e:            far.Fingerprint != "",
		far:            far,
	}
	if err := w.register(l); err != nil {
		return nil, err
	}
	l.log = w.log.With("ice_ufrag", l.ufrag)
	return l, nil
}

func (l *WebRTCLeg) isClosed() bool { return l.isDown.Load() }

// checked records a verified connectivity check on pair d. The first
// valid pair is used at once; a nominated one (USE-CANDIDATE) replaces it,
// as does a later nomination of another pair.
func (l *WebRTCLeg) checked(d legDest, nominated bool, now time.Time) {
	l.lastConsent.Store(now.UnixNano())
	if l.e2e {
		// No handshake of ours: a verified pair is all the leg needs,
		// and consent freshness runs from here.
		l.connOnce.Do(func() { close(l.connected) })
	}
	cur := l.dst.Load()
	if cur == nil || (nominated && !cur.same(d.addr, d.tcp)) {
		l.dst.Store(&d)
		if cur != nil {
			l.log.Debug("webrtc leg: browser moved to another pair", "to", d.addr.String(), "tcp", d.tcp != nil)
		}
		l.dstOnce.Do(func() { close(l.haveDst) })
	}
}

// dtlsRecord hands a DTLS record from a verified source to the handshake.
func (l *WebRTCLeg) dtlsRecord(pkt []byte) {
	if l.e2e {
		l.passIn(pkt, time.Now())
		return
	}
	if l.dtlsDone.Load() {
		return
	}
	select {
	case l.dtlsIn <- append([]byte(nil), pkt...):
	default: // the handshake is not reading: DTLS retransmits
	}
}

// media is the receive path of SRTP and SRTCP from a verified source.
func (l *WebRTCLeg) media(pkt []byte, now time.Time) {
	if l.e2e {
		l.passIn(pkt, now)
		return
	}
	sess := l.srtp.Load()
	if sess == nil {
		l.dropped.Add(1) // before the keys: nothing to decrypt with
		return
	}
	if IsRTCP(pkt) {
		l.rmu.Lock() // the session decrypts RTCP with its RTP context
		plain, _, ok := sess.decryptRTCP(pkt)
		l.rmu.Unlock()
		if !ok || !l.received(plain, now) {
			l.dropped.Add(1)
		}
		return
	}
	if _, ok := RTPHeaderLen(pkt); !ok {
		l.dropped.Add(1)
		return
	}
	l.rmu.Lock()
	out, _, ok := sess.decryptRTP(pkt)
	if ok {
		_, ok = RTPHeaderLen(out)
	}
	if !ok {
		l.rmu.Unlock()
		l.dropped.Add(1)
		return
	}
	l.rx.update(out, now)
	if ref := l.sink.Load(); ref != nil {
		ref.h(out)
	}
	l.rmu.Unlock()
}

// handshake runs the DTLS handshake on the leg's verified pair, keys SRTP
// from it and then keeps the session a while for retransmissions.
func (l *WebRTCLeg) handshake() {
	ctx, cancel := context.WithTimeout(context.Background(), l.connectTimeout)
	defer cancel()
	stopOnClose := context.AfterFunc(ctx, func() {})
	defer stopOnClose()
	go func() {
		select {
		case <-l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if l.dtlsClient {
		// We send the ClientHello: wait for a pair to send it on.
		select {
		case <-l.haveDst:
		case <-ctx.Done():
			l.fail(FailICETimeout, errors.New("no ICE connectivity check before the timeout"))
			return
		}
	}
	pc := &legDTLSConn{l: l, stop: make(chan struct{})}
	// The connection ignores deadlines: a handshake still waiting for the
	// browser at the deadline (or at Close) is ended by closing it.
	stopConn := context.AfterFunc(ctx, pc.close)
	raddr := &net.UDPAddr{IP: net.IPv4zero}
	dc, err := newDTLSConn(pc, raddr, l.w.cert, l.dtlsClient, l.fpHash, l.fp, nil)
	if err != nil {
		l.fail(FailDTLSSetup, fmt.Errorf("dtls: %w", err))
		return
	}
	finish := func() {
		pc.close()
		l.dtlsDone.Store(true)
		_ = dc.Close()
	}
	err = dc.HandshakeContext(ctx)
	stopConn() // done with the deadline: the session lingers for retransmissions
	if err != nil {
		finish()
		l.fail(l.handshakeCause(ctx), fmt.Errorf("dtls handshake: %w", err))
		return
	}
	keys, err := srtpFromDTLS(dc, l.dtlsClient)
	var sess *srtpSession
	if err == nil {
		sess, err = newMuxedSRTPSession(keys)
	}
	if err != nil {
		finish()
		l.fail(FailSRTPKeys, err)
		return
	}
	keysExported.Add(1)
	l.srtp.Store(sess)
	l.connOnce.Do(func() { close(l.connected) })
	t := time.NewTimer(dtlsLinger)
	select {
	case <-t.C:
	case <-l.closed:
		t.Stop()
	}
	finish()
}

// start launches the handshake once the browser's DTLS parameters are known.
func (l *WebRTCLeg) start() {
	if !l.started.CompareAndSwap(false, true) {
		return
	}
	if l.e2e {
		go l.awaitICE()
		return
	}
	go l.handshake()
}

// tick runs the leg's timers; the janitor calls it about once a second.
func (l *WebRTCLeg) tick(now time.Time) {
	if l.isClosed() {
		return
	}
	select {
	case <-l.connected:
	default:
		return
	}
	if last := l.lastConsent.Load(); now.Sub(time.Unix(0, last)) > l.w.opts.ConsentTimeout {
		l.fail(FailICEConsent, errors.New("ICE consent expired: no connectivity check from the browser"))
		return
	}
	if now.After(l.nextReport) {
		if !l.nextReport.IsZero() {
			l.sendReport(now)
		}
		// Randomised over [0.5, 1.5) of the mean (RFC 3550 §6.3.1).
		l.nextReport = now.Add(webrtcRTCPInterval/2 + mrand.N(webrtcRTCPInterval))
	}
}

// Causes of a WebRTC leg's failure (FailCause).
const (
	FailICETimeout  = "ice_timeout"         // no verified connectivity check in time
	FailICEConsent  = "ice_consent_expired" // the browser stopped sending checks
	FailICETCPLost  = "ice_tcp_closed"      // the ICE-TCP connection of the selected pair closed
	FailDTLSSetup   = "dtls_setup"          // the DTLS connection could not be made
	FailDTLSTimeout = "dtls_timeout"        // the handshake did not complete in time
	FailDTLS        = "dtls_handshake"      // the handshake failed (alert, fingerprint)
	FailSRTPKeys    = "srtp_keys"           // no SRTP keys from the handshake
	FailClosed      = "closed"              // the relay's WebRTC port closed
)

// handshakeCause classifies a failed DTLS handshake: one that ran out of
// time without a verified ICE check never had a path to run on.
func (l *WebRTCLeg) handshakeCause(ctx context.Context) string {
	if ctx.Err() == nil {
		return FailDTLS
	}
	select {
	case <-l.haveDst:
		return FailDTLSTimeout
	default:
		return FailICETimeout
	}
}

func (l *WebRTCLeg) fail(cause string, err error) {
	l.failOnce.Do(func() {
		l.failCause = cause
		if !l.isClosed() {
			l.log.Info("webrtc leg failed", "err", err)
		}
		close(l.failed)
	})
}

// Failed is closed when ICE or DTLS fails, never completes, or the
// browser's consent expires.
func (l *WebRTCLeg) Failed() <-chan struct{} { return l.failed }

// FailCause says why the leg failed (one of the Fail* constants); it is
// set once Failed is closed, and "" before.
func (l *WebRTCLeg) FailCause() string {
	select {
	case <-l.failed:
		return l.failCause
	default:
		return ""
	}
}

// Connected is closed once ICE and DTLS have completed.
func (l *WebRTCLeg) Connected() <-chan struct{} { return l.connected }

// WaitConnected blocks until the leg is connected, fails, or ctx ends.
func (l *WebRTCLeg) WaitConnected(ctx context.Context) error {
	select {
	case <-l.connected:
		return nil
	case <-l.failed:
		return errors.New("ice/dtls failed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Attach delivers the browser's decrypted RTP to h on the shard's
// goroutine until the leg closes (PacketSource).
func (l *WebRTCLeg) Attach(h func(pkt []byte), done func(error)) {
	ref := &sinkRef{h}
	l.serveMu.Lock()
	select {
	case <-l.closed:
		l.serveMu.Unlock()
		go done(fmt.Errorf("webrtc leg: %w", net.ErrClosed))
		return
	default:
	}
	prev := l.served
	l.served = &attached{ref: ref, done: done}
	l.sink.Store(ref)
	l.serveMu.Unlock()
	if prev != nil {
		l.release(prev, errors.New("webrtc leg: served by another handler"))
	}
}

// attached is a handler given to Attach, and its done.
type attached struct {
	ref  *sinkRef
	done func(error)
}

// Serve is Attach that returns done's error, for callers with a goroutine
// to spare (tests, tools).
func (l *WebRTCLeg) Serve(h func(pkt []byte)) error { return Serve(l, h) }

// detach releases the attached handler once the leg is closed.
func (l *WebRTCLeg) detach() {
	l.serveMu.Lock()
	a := l.served
	l.served = nil
	l.serveMu.Unlock()
	if a != nil {
		l.release(a, fmt.Errorf("webrtc leg: %w", net.ErrClosed))
	}
}

// release stops delivering to a, if it is still the sink, and calls its
// done with why once no packet is in its hands. The wait runs on a
// goroutine of its own: the caller may have a packet of the leg in flight.
func (l *WebRTCLeg) release(a *attached, why error) {
	go func() {
		l.sink.CompareAndSwap(a.ref, nil)
		l.quiesce()
		a.done(why)
	}()
}

// quiesce waits until no packet of the leg is being handled.
func (l *WebRTCLeg) quiesce() {
	l.rmu.Lock()
	//lint:ignore SA2001 waiting for the packet in flight is the point
	l.rmu.Unlock()
}

// ReadRTP returns the next decrypted RTP packet from the browser. It is
// for tests and tools; the relay's forwarding uses Serve, which copies
// nothing and crosses no goroutine.
func (l *WebRTCLeg) ReadRTP(b []byte) (int, error) {
	l.readOnce.Do(func() {
		q := make(chan []byte, 256)
		l.readQ = q
		l.sink.CompareAndSwap(nil, &sinkRef{func(p []byte) {
			select {
			case q <- append([]byte(nil), p...):
			default:
				l.dropped.Add(1)
			}
		}})
	})
	select {
	case p := <-l.readQ:
		return copy(b, p), nil
	case <-l.closed:
		return 0, fmt.Errorf("webrtc leg: %w", net.ErrClosed)
	}
}

// WriteRTP sends one RTP packet to the browser with the SSRC announced in
// our SDP, encrypted. Packets before DTLS completes are dropped. It does
// not retain or modify b.
func (l *WebRTCLeg) WriteRTP(b []byte) error {
	hl, ok := RTPHeaderLen(b)
	if !ok {
		return errors.New("webrtc leg: malformed rtp")
	}
	if l.isClosed() {
		return fmt.Errorf("webrtc leg: %w", net.ErrClosed)
	}
	d, sess := l.dst.Load(), l.srtp.Load()
	if d == nil || sess == nil {
		return nil
	}
	payload := b[hl : hl+rtpPayloadLen(b, hl)]
	sess.wmu.Lock()
	// A plain 12-byte header: the trunk's CSRCs, extensions and padding
	// mean nothing to the browser.
	plain, wbuf, now := scratchFor(b)
	if plain == nil {
		if l.wplain == nil {
			l.wplain = make([]byte, forwardBufSize)
		}
		plain, wbuf = l.wplain, sess.sealBuf()
	}
	p := plain[:rtpHeaderMin+len(payload)]
	p[0] = 0x80
	p[1] = b[1]
	copy(p[2:8], b[2:8])
	binary.BigEndian.PutUint32(p[8:], l.ssrc)
	copy(p[rtpHeaderMin:], payload)
	out, err := sess.encRTP.EncryptRTP(wbuf, p, &sess.whdr)
	if err == nil {
		err = d.sendFor(b, out)
	}
	if err == nil {
		l.sent(p, len(payload), now) // p is only ours under wmu
	}
	sess.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("webrtc leg: send to %s: %w", d.addr, err)
	}
	return nil
}

// Stats returns the leg's counters.
func (l *WebRTCLeg) Stats() LegStats {
	s := LegStats{
		PacketsIn:  l.rx.packets.Load(),
		BytesIn:    l.rx.bytes.Load(),
		PacketsOut: l.pktsOut.Load(),
		BytesOut:   l.bytesOut.Load(),
		Dropped:    l.dropped.Load(),
		Lost:       l.rx.totalLost(),
		Jitter:     l.rx.jitterMs(),
	}
	l.rx.times(&s)
	l.peerStats(&s)
	return s
}

// webrtcRTCPInterval is the mean interval of our reports to the browser.
const webrtcRTCPInterval = 5 * time.Second

// sendReport sends the browser an SR/RR (RFC 3550 §6.4) on the selected
// pair, so its getStats() shows the relay's view of the stream.
func (l *WebRTCLeg) sendReport(now time.Time) {
	d, sess := l.dst.Load(), l.srtp.Load()
	if d == nil || sess == nil {
		return
	}
	b, err := l.report(&l.rx, now, false)
	if err == nil {
		b, err = sess.encryptRTCP(b)
	}
	if err == nil {
		_, err = d.sendSlow(b)
	}
	if err != nil {
		l.log.Debug("webrtc leg: rtcp report failed", "err", err)
	}
}

// Transport says how the browser reaches the leg now: "udp" or "tcp"
// (ICE-TCP) and the address family, "udp4", "tcp6"...; "" before any
// connectivity check verified.
func (l *WebRTCLeg) Transport() string {
	d := l.dst.Load()
	if d == nil {
		return ""
	}
	family := "4"
	if d.addr.Addr().Is6() {
		family = "6"
	}
	if d.tcp != nil {
		return "tcp" + family
	}
	return "udp" + family
}

// SRTPKeyed reports whether the leg holds SRTP keys (its DTLS handshake
// completed).
func (l *WebRTCLeg) SRTPKeyed() bool { return l.srtp.Load() != nil }

// Close ends the leg: its ufrag is forgotten, its sources are swept from
// the shards, and Serve and ReadRTP return.
func (l *WebRTCLeg) Close() error {
	l.closeOnce.Do(func() {
		l.isDown.Store(true)
		l.w.unregister(l)
		close(l.closed)
		l.detach()
	})
	return nil
}

// legDTLSConn carries one leg's DTLS records between its shard and
// pion/dtls: records arrive through the leg's queue, and leave on the
// selected pair. Once stopped it swallows writes, so no alert reaches a
// browser whose session we merely stop tracking.
type legDTLSConn struct {
	l    *WebRTCLeg
	stop chan struct{}
	once sync.Once
}

func (c *legDTLSConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case rec := <-c.l.dtlsIn:
		return copy(b, rec), &net.UDPAddr{IP: net.IPv4zero}, nil
	case <-c.stop:
		return 0, nil, errDTLSStopped
	}
}

func (c *legDTLSConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.stop:
		return len(b), nil
	default:
	}
	d := c.l.dst.Load()
	if d == nil {
		return len(b), nil // no pair yet: the peer retransmits
	}
	return d.sendSlow(b)
}

func (c *legDTLSConn) close() { c.once.Do(func() { close(c.stop) }) }

func (c *legDTLSConn) Close() error                       { c.close(); return nil }
func (c *legDTLSConn) LocalAddr() net.Addr                { return c.l.w.LocalAddr() }
func (c *legDTLSConn) SetDeadline(t time.Time) error      { return nil }
func (c *legDTLSConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *legDTLSConn) SetWriteDeadline(t time.Time) error { return nil }
