package media

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Latching modes for RTPLegOptions.Latching.
const (
	// LatchSDP accepts media only from the address the peer's SDP gave.
	LatchSDP = "sdp"
	// LatchLearn latches, once the peer's SDP is known, the first source
	// to send learnPackets valid packets in a row (one SSRC, sequence
	// numbers increasing), and drops every other one.
	LatchLearn = "learn"
)

// Learning in LatchLearn mode: how many consecutive packets a source must
// send to be latched, how far apart their sequence numbers may be, and
// how many sources are followed at once.
const (
	learnPackets   = 5
	learnSeqGap    = 100
	learnSourceMax = 8
)

// Drop reasons passed to OnDrop callbacks; stable, for metric labels.
const (
	DropUnlatched     = "unlatched_source"
	DropLearning      = "latch_learning" // a source's packets while it has not yet been latched (LatchLearn)
	DropMalformed     = "malformed"
	DropTruncated     = "truncated"
	DropRTCPMalformed = "rtcp_malformed"
	DropUnknownPT     = "unknown_pt"
	DropWriteFailed   = "write_failed"
	DropSRTPAuth      = "srtp_auth"
	DropSRTPReplay    = "srtp_replay"
)

// ErrNoRemote is returned by WriteRTP while the leg has nowhere to send:
// no SetRemote yet, or the peer put the call on hold with an unspecified
// address, and nothing latched.
var ErrNoRemote = errors.New("rtp leg: no remote address")

// errMalformedOut rejects an outgoing packet that isn't valid RTP; we don't
// send what we couldn't parse ourselves.
var errMalformedOut = errors.New("rtp leg: malformed outgoing RTP packet")

const defaultRTCPInterval = 5 * time.Second

// RTPLegOptions configures NewRTPLeg.
type RTPLegOptions struct {
	// Ports supplies the RTP/RTCP socket pair. Required.
	Ports *PortAllocator
	// ClockRate of the negotiated codec, for jitter and SR timestamps
	// (8000 for G.711/G.722, 48000 for Opus). 0 means 8000.
	ClockRate uint32
	// Latching is LatchSDP (default when empty) or LatchLearn.
	Latching string
	// OnDrop, if set, is called for every dropped incoming packet with one
	// of the Drop* reasons. It runs on the packet path: keep it cheap.
	OnDrop func(reason string)
	// RTCPInterval is the mean RTCP report interval; 0 means 5 s.
	RTCPInterval time.Duration
	// CNAME for RTCP SDES; empty means a random one.
	CNAME string
	// SRTP, if set, protects the leg with SDES-SRTP/SRTCP; packets that
	// fail authentication or replay checks are dropped and counted
	// (DropSRTPAuth, DropSRTPReplay).
	SRTP *SRTPConfig
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// remote is the peer's negotiated addresses, replaced as a whole on re-INVITE.
type remote struct {
	rtp, rtcp netip.AddrPort
}

// RTPLeg is the SIP-side media leg: one RTP/RTCP UDP port pair, latched to
// the peer, with RFC 3550 receive statistics and periodic RTCP reports.
//
// ReadRTP must be called from one goroutine at a time (the receive
// statistics are updated without locks); WriteRTP, SetRemote, Stats and
// Close are safe from any goroutine.
type RTPLeg struct {
	o     RTPLegOptions
	log   *slog.Logger
	pair  *PortPair
	local netip.AddrPort
	learn bool
	srtp  *srtpSession
	// opaque: an end-to-end leg (SetE2E) passes DTLS and SRTP/SRTCP
	// through unchanged.
	opaque atomic.Bool
	// ice, when set (EnableICE), answers the far end's connectivity
	// checks on the RTP port (e2e_ice.go).
	ice *legICE
	// batch is ReadRTP's, made on its first call (Serve reads into its
	// loop's buffers); nil off Linux: one recvmsg per packet.
	batch     *batchReader
	batchOnce sync.Once
	out       *udpSender // RTP sends on the RTP socket
	remote    atomic.Pointer[remote]

	// Learned sources (LatchLearn), and in both modes where the peer's
	// RTCP came from (the address symmetric RTCP answers to).
	latchedRTP  atomic.Pointer[netip.AddrPort]
	latchedRTCP atomic.Pointer[netip.AddrPort]
	rtcpMux     atomic.Bool // the peer sends RTCP on its RTP port
	// LatchLearn candidates, owned by the reading goroutine; SetRemote
	// bumps learnGen to make it start over.
	learnGen  atomic.Uint32
	candGen   uint32
	learnSrcs []learnSource

	recv    recvStats
	dropped atomic.Uint64
	rtcpState

	// Attach: the media loop the RTP socket is on, the packet handler, and
	// what to call when the leg closes or pauses.
	fd        int // the RTP socket's descriptor, for the loop's raw reads
	regMu     sync.Mutex
	reg       *loop
	regSlot   int32
	sink      func(pkt []byte) // set before the socket joins the loop
	serveDone func(error)      // under regMu; nil when not attached
	// Packets Inject queued to take the place of the next ones delivered;
	// injected counts them, so that the packet path locks only while
	// some wait.
	injectMu sync.Mutex
	injectQ  [][]byte
	injected atomic.Int32
	paused   atomic.Bool // under regMu when set, so Attach sees it

	done        chan struct{}
	rtcpMu      sync.Mutex // the report timer, and stopping it
	rtcpTimer   *time.Timer
	rtcpStopped bool
	rtcpPort    *rtcpPort // the RTCP socket's loop handler; nil: read by a goroutine
	readerWG    sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
}

// NewRTPLeg allocates a port pair and starts the RTCP goroutines.
func NewRTPLeg(o RTPLegOptions) (*RTPLeg, error) {
	if o.Ports == nil {
		return nil, errors.New("rtp leg: no port allocator")
	}
	switch o.Latching {
	case "":
		o.Latching = LatchSDP
	case LatchSDP, LatchLearn:
	default:
		return nil, fmt.Errorf("rtp leg: unknown latching mode %q", o.Latching)
	}
	if o.ClockRate == 0 {
		o.ClockRate = 8000
	}
	if o.RTCPInterval <= 0 {
		o.RTCPInterval = defaultRTCPInterval
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("rtp leg: random: %w", err)
	}
	if o.CNAME == "" {
		o.CNAME = hex.EncodeToString(rnd[4:])
	}
	var sess *srtpSession
	if o.SRTP != nil {
		var err error
		if sess, err = newSRTPSession(o.SRTP); err != nil {
			return nil, fmt.Errorf("rtp leg: %w", err)
		}
	}
	pair, err := o.Ports.Allocate()
	if err != nil {
		return nil, fmt.Errorf("rtp leg: %w", err)
	}
	local := netip.AddrPortFrom(o.Ports.IP(), uint16(pair.Port()))
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	l := &RTPLeg{
		o:     o,
		log:   log.With("leg", local.String()),
		pair:  pair,
		local: local,
		learn: o.Latching == LatchLearn,
		rtcpState: rtcpState{
			clock: o.ClockRate,
			cname: o.CNAME,
			ssrc:  binary.BigEndian.Uint32(rnd[:4]),
		},
		srtp: sess,
		out:  pair.rtp.out,
		fd:   pair.rtp.fd,
		done: make(chan struct{}),
	}
	l.recv.clockRate = uint64(o.ClockRate)
	l.recv.epoch = time.Now()
	l.startReports()
	l.startRTCPReads()
	return l, nil
}

// LocalAddr is the local RTP address, for the SDP (RTCP is its port + 1).
func (l *RTPLeg) LocalAddr() netip.AddrPort { return l.local }

// SetRemote sets the peer's RTP and RTCP addresses from its SDP (c=, m=,
// a=rtcp). A zero rtcp means the RTP port + 1; rtcp equal to rtp means
// rtcp-mux. It may be called again on re-INVITE. An unspecified address
// (c=0.0.0.0, hold) stops sending. In LatchLearn mode a changed RTP address
// forgets the learned source, since the peer has said it moved.
func (l *RTPLeg) SetRemote(rtp, rtcp netip.AddrPort) {
	rtp = unmap(rtp)
	switch {
	case !rtp.IsValid() || rtp.Port() == 0:
		// Port 0 rejects the stream (RFC 3264 §6): nowhere to send
		// RTCP either.
		rtcp = netip.AddrPort{}
	case !rtcp.IsValid() || rtcp.Port() == 0:
		rtcp = netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1)
	default:
		rtcp = unmap(rtcp)
	}
	old := l.remote.Swap(&remote{rtp: rtp, rtcp: rtcp})
	if old == nil || old.rtp != rtp {
		l.latchedRTP.Store(nil)
		l.latchedRTCP.Store(nil)
		l.rtcpMux.Store(false)
		l.learnGen.Add(1)
	}
	l.log.Debug("rtp leg remote set", "rtp", rtp.String(), "rtcp", rtcp.String())
}

// Transport says how the leg's media goes: "udp4" or "udp6", by the
// family of the peer's address; "" before the peer's SDP is known.
func (l *RTPLeg) Transport() string {
	r := l.remote.Load()
	switch {
	case r == nil || !r.rtp.IsValid():
		return ""
	case r.rtp.Addr().Is4():
		return "udp4"
	}
	return "udp6"
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (l *RTPLeg) drop(reason string) {
	l.dropped.Add(1)
	if l.o.OnDrop != nil {
		l.o.OnDrop(reason)
	}
}

// ReadRTP blocks until an RTP packet from the latched peer arrives, copies it
// into b (which should hold a full datagram, 1500 bytes or more) and returns
// its length. Everything else that arrives meanwhile is dropped and counted,
// and RTCP multiplexed on the RTP port is consumed. After Close it returns an
// error wrapping net.ErrClosed.
func (l *RTPLeg) ReadRTP(b []byte) (int, error) {
	n, err := l.readRTP(b)
	if err == nil {
		if p := l.substitute(); p != nil {
			n = copy(b, p)
		}
	}
	return n, err
}

// Inject queues pkts to be delivered, one each, in place of the next
// packets the leg receives and accepts, so that they keep the far end's
// packet clock: RFC 4733 events played into a call (signaling/dtmf). The
// leg's statistics still count what arrived.
func (l *RTPLeg) Inject(pkts [][]byte) {
	l.injectMu.Lock()
	defer l.injectMu.Unlock()
	l.injectQ = append(l.injectQ, pkts...)
	l.injected.Store(int32(len(l.injectQ)))
}

// substitute pops the next injected packet, if one waits.
func (l *RTPLeg) substitute() []byte {
	if l.injected.Load() == 0 {
		return nil
	}
	l.injectMu.Lock()
	defer l.injectMu.Unlock()
	if len(l.injectQ) == 0 {
		return nil
	}
	p := l.injectQ[0]
	l.injectQ[0] = nil
	l.injectQ = l.injectQ[1:]
	l.injected.Store(int32(len(l.injectQ)))
	return p
}

func (l *RTPLeg) readRTP(b []byte) (int, error) {
	conn, err := l.pair.rtp.goConn()
	if err != nil {
		return 0, fmt.Errorf("rtp leg %s: read: %w", l.local, err)
	}
	l.batchOnce.Do(func() { l.batch = newBatchReader(conn) })
	if l.batch != nil {
		return l.readBatched(b)
	}
	for {
		n, _, flags, from, err := conn.ReadMsgUDPAddrPort(b, nil)
		if err != nil {
			return 0, fmt.Errorf("rtp leg %s: read: %w", l.local, err)
		}
		if flags&syscall.MSG_TRUNC != 0 {
			l.drop(DropTruncated)
			continue
		}
		if n, ok := l.accept(b[:n], unmap(from)); ok {
			return n, nil
		}
	}
}

// readBatched is ReadRTP over recvmmsg: one syscall serves every datagram
// queued at the socket, and each is copied out (a 172-byte copy costs far
// less than the syscall it saves).
func (l *RTPLeg) readBatched(b []byte) (int, error) {
	for {
		pkt, from, truncated, err := l.batch.read()
		if err != nil {
			return 0, fmt.Errorf("rtp leg %s: read: %w", l.local, err)
		}
		if truncated || len(pkt) > len(b) {
			l.drop(DropTruncated)
			continue
		}
		n := copy(b, pkt)
		if n, ok := l.accept(b[:n], from); ok {
			return n, nil
		}
	}
}

// accept runs one datagram received on the RTP port through latching,
// validation, SRTP and statistics. It returns the plaintext length and
// whether to deliver it. It is the whole untrusted-input path of the RTP
// port, so the fuzz target drives it directly.
func (l *RTPLeg) accept(pkt []byte, from netip.AddrPort) (int, bool) {
	if l.ice != nil && len(pkt) > 0 && pkt[0] < 4 {
		l.iceCheck(pkt, from) // RFC 7983: STUN
		return 0, false
	}
	if l.opaque.Load() {
		if n, ok, handled := l.acceptOpaque(pkt, from); handled {
			return n, ok
		}
	}
	if IsRTCP(pkt) {
		if !l.rtcpSourceOK(from, true) {
			l.drop(DropUnlatched)
			return 0, false
		}
		if l.handleRTCP(pkt, from, true) {
			l.rtcpMux.Store(true)
		}
		return 0, false
	}
	latched := l.latchedRTP.Load()
	if l.learn {
		// Nothing is learned before the peer's SDP (the answer, on a
		// call the relay placed), and nothing but the latched source after.
		if (latched != nil && *latched != from) || (latched == nil && l.remote.Load() == nil) {
			l.drop(DropUnlatched)
			return 0, false
		}
	} else if r := l.remote.Load(); (r == nil || r.rtp != from) && !l.iceVerified(from) {
		l.drop(DropUnlatched)
		return 0, false
	}
	if _, ok := RTPHeaderLen(pkt); !ok {
		l.drop(DropMalformed)
		return 0, false
	}
	if l.srtp != nil {
		var reason string
		var ok bool
		if pkt, reason, ok = l.srtp.decryptRTP(pkt); !ok {
			l.drop(reason)
			return 0, false
		}
		if _, ok := RTPHeaderLen(pkt); !ok {
			// Authentic but malformed once the tag is off (e.g. padding).
			l.drop(DropMalformed)
			return 0, false
		}
	}
	if l.learn && latched == nil {
		// Latch only on packets that parsed (and, with SRTP,
		// authenticated), several in a row from one source, so garbage
		// or a single packet sprayed at the port can't win.
		if !l.learnFrom(pkt, from) {
			l.drop(DropLearning)
			return 0, false
		}
		a := from
		l.latchedRTP.Store(&a)
		l.log.Info("rtp leg latched", "source", from.String())
	}
	l.recv.update(pkt, packetTime(pkt))
	return len(pkt), true
}

// learnSource is a source LatchLearn is following.
type learnSource struct {
	from netip.AddrPort
	ssrc uint32
	seq  uint16
	n    int // consecutive valid packets
}

// learnFrom counts a valid RTP packet from a not yet latched source and
// reports whether that source has now sent learnPackets in a row.
func (l *RTPLeg) learnFrom(pkt []byte, from netip.AddrPort) bool {
	if gen := l.learnGen.Load(); gen != l.candGen {
		l.learnSrcs, l.candGen = l.learnSrcs[:0], gen
	}
	ssrc, seq := binary.BigEndian.Uint32(pkt[8:12]), binary.BigEndian.Uint16(pkt[2:4])
	for i := range l.learnSrcs {
		c := &l.learnSrcs[i]
		if c.from != from {
			continue
		}
		if d := seq - c.seq; c.ssrc == ssrc && d >= 1 && d <= learnSeqGap {
			c.n++
		} else {
			c.ssrc, c.n = ssrc, 1
		}
		c.seq = seq
		return c.n >= learnPackets
	}
	if len(l.learnSrcs) >= learnSourceMax {
		l.learnSrcs = append(l.learnSrcs[:0], l.learnSrcs[1:]...) // forget the oldest
	}
	l.learnSrcs = append(l.learnSrcs, learnSource{from: from, ssrc: ssrc, seq: seq, n: 1})
	return learnPackets <= 1
}

// rtcpSourceOK applies latching to an RTCP packet, received on the RTP port
// (mux) or on the RTCP port.
func (l *RTPLeg) rtcpSourceOK(from netip.AddrPort, onRTPPort bool) bool {
	if onRTPPort && l.iceVerified(from) {
		return true
	}
	if !l.learn {
		r := l.remote.Load()
		if r == nil {
			return false
		}
		if onRTPPort {
			return from == r.rtp || from == r.rtcp
		}
		return from == r.rtcp
	}
	rtpSrc := l.latchedRTP.Load()
	if onRTPPort {
		return rtpSrc != nil && *rtpSrc == from
	}
	if c := l.latchedRTCP.Load(); c != nil {
		return *c == from
	}
	// Not learned yet: the first valid RTCP source is latched by
	// handleRTCP, but only from the host the RTP came from, if any.
	return rtpSrc == nil || rtpSrc.Addr() == from.Addr()
}

// WriteRTP sends one RTP packet to the peer: to where its media is latched
// from once latched (symmetric RTP), else to its SDP address. It does not
// retain b.
func (l *RTPLeg) WriteRTP(b []byte) error {
	dst, ok := l.rtpDest()
	if !ok {
		return ErrNoRemote
	}
	hdr, ok := RTPHeaderLen(b)
	if !ok {
		return errMalformedOut
	}
	octets := rtpPayloadLen(b, hdr)
	if l.srtp != nil {
		if err := l.writeSRTP(b, dst); err != nil {
			return err
		}
	} else if err := l.out.sendFor(b, b, dst); err != nil {
		return fmt.Errorf("rtp leg %s: write to %s: %w", l.local, dst, err)
	}
	l.sent(b, octets, packetTime(b))
	return nil
}

func (l *RTPLeg) rtpDest() (netip.AddrPort, bool) {
	if a := l.latchedRTP.Load(); a != nil {
		return *a, true
	}
	r := l.remote.Load()
	if r == nil || !r.rtp.IsValid() || r.rtp.Addr().IsUnspecified() || r.rtp.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return r.rtp, true
}

// rtcpDest says where to send RTCP and from which socket.
func (l *RTPLeg) rtcpDest() (netip.AddrPort, *udpSender, bool) {
	r := l.remote.Load()
	if l.rtcpMux.Load() || (r != nil && r.rtcp == r.rtp) {
		dst, ok := l.rtpDest()
		return dst, l.pair.rtp.out, ok
	}
	if a := l.latchedRTCP.Load(); a != nil {
		return *a, l.pair.rtcp.out, true
	}
	if a := l.latchedRTP.Load(); a != nil && (r == nil || *a != r.rtp) {
		// Learned RTP from somewhere the SDP didn't say (a NATed
		// peer): until its RTCP arrives and latches, the next port on
		// the same public address is the best guess.
		return netip.AddrPortFrom(a.Addr(), a.Port()+1), l.pair.rtcp.out, true
	}
	if r == nil || !r.rtcp.IsValid() || r.rtcp.Addr().IsUnspecified() {
		return netip.AddrPort{}, nil, false
	}
	return r.rtcp, l.pair.rtcp.out, true
}

// Stats returns a snapshot of the leg's counters. Safe concurrently.
func (l *RTPLeg) Stats() LegStats {
	s := LegStats{
		PacketsIn:  l.recv.packets.Load(),
		PacketsOut: l.pktsOut.Load(),
		BytesIn:    l.recv.bytes.Load(),
		BytesOut:   l.bytesOut.Load(),
		Dropped:    l.dropped.Load(),
		Lost:       l.recv.totalLost(),
		Jitter:     l.recv.jitterMs(),
	}
	l.peerStats(&s)
	l.recv.times(&s)
	return s
}

// PauseReads makes a ReadRTP blocked in another goroutine return an error
// wrapping os.ErrDeadlineExceeded, and every ReadRTP fail the same way
// until ResumeReads; an attached handler is detached with that error. It
// lets a call hand the leg to a new reader (a transfer joins it to another
// call) without closing it: packets that arrive meanwhile wait in the
// socket buffer. RTCP keeps running.
func (l *RTPLeg) PauseReads() error {
	l.regMu.Lock()
	l.paused.Store(true)
	l.regMu.Unlock()
	l.detach(fmt.Errorf("rtp leg %s: read: %w", l.local, os.ErrDeadlineExceeded))
	return l.pair.rtp.setReadDeadline(time.Unix(1, 0))
}

// ResumeReads lets ReadRTP block, and Attach serve, again after
// PauseReads.
func (l *RTPLeg) ResumeReads() error {
	l.paused.Store(false)
	return l.pair.rtp.setReadDeadline(time.Time{})
}

// Attach hands the peer's RTP to h on a media loop's goroutine, with no
// copy and no goroutine of its own, until the leg closes or PauseReads;
// then done gets an error wrapping net.ErrClosed or os.ErrDeadlineExceeded
// (as ReadRTP's would), on a goroutine of its own, once h has stopped.
// Where there are no loops it reads with ReadRTP on a goroutine.
// (PacketSource)
func (l *RTPLeg) Attach(h func(pkt []byte), done func(error)) {
	lp, err := pickLoop()
	if err != nil || l.fd < 0 {
		go func() {
			buf := make([]byte, readBufSize)
			for {
				n, err := l.ReadRTP(buf)
				if err != nil {
					done(err)
					return
				}
				h(buf[:n])
			}
		}()
		return
	}
	l.regMu.Lock()
	var fail error
	select {
	case <-l.done:
		fail = fmt.Errorf("rtp leg %s: read: %w", l.local, net.ErrClosed)
	default:
		switch {
		case l.paused.Load():
			fail = fmt.Errorf("rtp leg %s: read: %w", l.local, os.ErrDeadlineExceeded)
		case l.reg != nil:
			fail = fmt.Errorf("rtp leg %s: already served", l.local)
		}
	}
	if fail == nil {
		l.sink = h
		slot, err := lp.add(l.fd, l)
		if err != nil {
			fail = fmt.Errorf("rtp leg %s: %w", l.local, err)
		} else {
			l.reg, l.regSlot, l.serveDone = lp, slot, done
		}
	}
	l.regMu.Unlock()
	if fail != nil {
		go done(fail)
	}
}

// Serve is Attach that returns done's error, for callers with a goroutine
// to spare (tests, tools).
func (l *RTPLeg) Serve(h func(pkt []byte)) error { return Serve(l, h) }

// detach takes the RTP socket off its loop and, if a handler was attached,
// tells its owner why. Once the socket is off, the handler is not running
// and the socket may close.
func (l *RTPLeg) detach(why error) {
	l.regMu.Lock()
	if l.reg != nil {
		l.reg.remove(l.regSlot, l.fd)
		l.reg = nil
	}
	done := l.serveDone
	l.serveDone = nil
	l.regMu.Unlock()
	if done != nil {
		go done(why)
	}
}

// ready is the loop's call: every datagram queued at the RTP socket.
func (l *RTPLeg) ready(lp *loop, now time.Time) {
	for {
		n := lp.batch.take(l.fd)
		for i := range n {
			pkt, from, truncated := lp.batch.at(i)
			l.datagram(pkt, from, truncated, now)
		}
		if n < lp.batch.size() {
			return
		}
	}
}

// recvFD is the RTP socket, for a loop that reads it itself.
func (l *RTPLeg) recvFD() int { return l.fd }

// datagram is the untrusted-input path of the RTP port on a loop.
func (l *RTPLeg) datagram(pkt []byte, from netip.AddrPort, truncated bool, _ time.Time) {
	if truncated {
		l.drop(DropTruncated)
		return
	}
	if k, ok := l.accept(pkt, from); ok {
		if p := l.substitute(); p != nil {
			pkt, k = p, len(p)
		}
		l.sink(pkt[:k])
	}
}

// Close sends an RTCP BYE, releases the ports and stops the leg's
// goroutines. It is idempotent.
func (l *RTPLeg) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.detach(fmt.Errorf("rtp leg %s: read: %w", l.local, net.ErrClosed))
		l.stopReports()
		l.sendReport(true)
		l.stopRTCPReads()
		l.out.shut()
		l.closeErr = l.pair.Close()
		l.readerWG.Wait()
		if l.closeErr != nil {
			l.closeErr = fmt.Errorf("rtp leg %s: close: %w", l.local, l.closeErr)
		}
	})
	return l.closeErr
}
