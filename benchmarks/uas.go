package benchmarks

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"

	"github.com/mediarelay/mediarelay/media"
	mrsdp "github.com/mediarelay/mediarelay/pkg/sdp"
)

// UAS is the trunk side of the benchmark: a SIP UAS on UDP loopback that
// answers every INVITE and echoes (or sinks) its RTP, plain, SDES-SRTP, or
// DTLS-SRTP end to end with the browser (uas_dtls.go).
// All calls share one RTP socket (and one for RTCP on the next port, so a
// relay without rtcp-mux gets no ICMP errors); a single goroutine reads it,
// telling calls apart by the relay's source address from its SDP.
type UAS struct {
	echo bool
	log  *slog.Logger

	sipConn  net.PacketConn
	rtpConn  *net.UDPConn
	rtcpConn *net.UDPConn
	rtpPort  int

	srv *sipgo.Server
	ua  *sipgo.UserAgent

	mu     sync.RWMutex
	byAddr map[netip.AddrPort]*uasCall
	byID   map[string]*uasCall
	sipIDs map[string]string // SIP Call-ID -> call key, for BYE

	id *dtlsIdentity // DTLS certificate, for DTLS-SRTP offers

	measuring  atomic.Bool   // collect delay samples only in the steady window
	unknown    atomic.Uint64 // RTP from an address no call negotiated
	invites    atomic.Uint64
	handshakes atomic.Uint64 // DTLS handshakes completed with browsers
}

// uasCall is one answered call. The reader goroutine writes it; the runner
// snapshots it; mu keeps them apart (uncontended almost always).
type uasCall struct {
	id     string
	remote netip.AddrPort
	codec  string
	rx, tx *srtp.Context // SDES
	dtls   *uasDTLS      // DTLS-SRTP: keyed once its handshake is done

	mu      sync.Mutex
	stats   *RecvStats
	upDelay []float64 // ms, browser -> trunk one-way, from the marker
	outSeq  uint16
	ssrc    uint32
	// The echo's RTP clock: timestamps follow the echo's own send times, so
	// the trunk->browser jitter measured at the client is that direction's
	// alone, not the round trip's.
	t0     time.Time
	tsBase uint32
	rate   int64
}

// NewUAS listens for SIP on sipAddr (UDP, e.g. "127.0.0.1:0") and for RTP on
// a fresh loopback port pair, and starts serving. echo false means sink.
func NewUAS(ctx context.Context, sipAddr string, echo bool, log *slog.Logger) (*UAS, error) {
	u := &UAS{echo: echo, log: log, byAddr: map[netip.AddrPort]*uasCall{}, byID: map[string]*uasCall{}, sipIDs: map[string]string{}}
	var err error
	if u.id, err = newDTLSIdentity(); err != nil {
		return nil, err
	}
	if u.rtpConn, u.rtcpConn, err = listenPair(); err != nil {
		return nil, err
	}
	u.rtpPort = u.rtpConn.LocalAddr().(*net.UDPAddr).Port
	if u.sipConn, err = net.ListenPacket("udp4", sipAddr); err != nil {
		u.closeRTP()
		return nil, fmt.Errorf("uas sip listen %s: %w", sipAddr, err)
	}
	if u.ua, err = sipgo.NewUA(sipgo.WithUserAgent("mediarelay-bench-uas")); err != nil {
		u.Close()
		return nil, fmt.Errorf("uas user agent: %w", err)
	}
	if u.srv, err = sipgo.NewServer(u.ua); err != nil {
		u.Close()
		return nil, fmt.Errorf("uas server: %w", err)
	}
	u.srv.OnInvite(u.onInvite)
	u.srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	u.srv.OnBye(u.onBye)
	u.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = u.srv.ServeUDP(u.sipConn) }()
	go u.readRTP()
	go drain(u.rtcpConn, log)
	return u, nil
}

// listenPair binds an even RTP port and RTP+1 for RTCP on 127.0.0.1.
func listenPair() (*net.UDPConn, *net.UDPConn, error) {
	for i := 0; i < 50; i++ {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, nil, fmt.Errorf("uas rtp listen: %w", err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		if p%2 == 0 && p < 65535 {
			b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
			if err == nil {
				_ = a.SetReadBuffer(4 << 20)
				_ = a.SetWriteBuffer(4 << 20)
				return a, b, nil
			}
		}
		a.Close()
	}
	return nil, nil, errors.New("uas: no free RTP/RTCP port pair on 127.0.0.1")
}

// drain discards what the relay sends to the RTCP port, in batches, as
// readRTP reads: a read per datagram through the net package would be a
// Syscall each, and each wakes the runtime's sysmon from its deep sleep
// (see mmsg).
func drain(c *net.UDPConn, log *slog.Logger) {
	b, err := newRTPBatch(c)
	if err != nil {
		log.Error("uas: RTCP not read", "err", err)
		return
	}
	for {
		if _, err := b.read(); errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// SIPAddr is the UAS's SIP address (host:port).
func (u *UAS) SIPAddr() string { return u.sipConn.LocalAddr().String() }

// RTPPort is the shared RTP port advertised in every answer.
func (u *UAS) RTPPort() int { return u.rtpPort }

// Invites counts INVITEs received (including ones answered with an error).
func (u *UAS) Invites() uint64 { return u.invites.Load() }

// DTLSHandshakes counts the DTLS handshakes the UAS completed with
// browsers: on end-to-end calls, each is the load client's own.
func (u *UAS) DTLSHandshakes() uint64 { return u.handshakes.Load() }

// Unknown counts RTP packets from addresses no call negotiated.
func (u *UAS) Unknown() uint64 { return u.unknown.Load() }

// SetMeasuring turns delay sampling on or off.
func (u *UAS) SetMeasuring(on bool) { u.measuring.Store(on) }

// Close stops SIP and RTP.
func (u *UAS) Close() {
	if u.srv != nil {
		_ = u.srv.Close()
	}
	if u.ua != nil {
		_ = u.ua.Close()
	}
	if u.sipConn != nil {
		_ = u.sipConn.Close()
	}
	u.closeRTP()
	u.mu.Lock()
	calls := u.byID
	u.byID, u.byAddr = map[string]*uasCall{}, map[netip.AddrPort]*uasCall{}
	u.mu.Unlock()
	for _, c := range calls {
		if c.dtls != nil {
			c.dtls.release() // ends a handshake still waiting for its browser
		}
	}
}

func (u *UAS) closeRTP() {
	if u.rtpConn != nil {
		_ = u.rtpConn.Close()
	}
	if u.rtcpConn != nil {
		_ = u.rtcpConn.Close()
	}
}

func (u *UAS) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	u.invites.Add(1)
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	// The called user is the key: the load client picks a unique one per
	// call, and a B2BUA changes the Call-ID but keeps the user.
	key := req.Recipient.User
	if key == "" {
		key = callID
	}
	u.mu.Lock()
	u.sipIDs[callID] = key
	u.mu.Unlock()
	answer, err := u.Answer(key, req.Body())
	if err != nil {
		u.log.Warn("uas: rejecting INVITE", "call_id", callID, "err", err)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", answer)
	host, portStr, _ := net.SplitHostPort(u.SIPAddr())
	port, _ := strconv.Atoi(portStr)
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "uas", Host: host, Port: port}})
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if err := tx.Respond(res); err != nil {
		u.log.Warn("uas: respond 200", "call_id", callID, "err", err)
	}
}

func (u *UAS) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if h := req.CallID(); h != nil {
		u.mu.Lock()
		key, ok := u.sipIDs[h.Value()]
		delete(u.sipIDs, h.Value())
		u.mu.Unlock()
		if ok {
			u.Release(key)
		}
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
}

// Answer accepts an SDP offer for the call filed under key and returns the answer. It picks the
// first offered codec it supports (PCMU, PCMA, opus) and does SDES-SRTP
// (AES_CM_128_HMAC_SHA1_80) when the offer is RTP/SAVP with a=crypto, or
// DTLS-SRTP with its own certificate when the offer is UDP/TLS/RTP/SAVP
// with a=fingerprint (an end-to-end call: the fingerprint is the browser's).
func (u *UAS) Answer(key string, offer []byte) ([]byte, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(offer); err != nil {
		return nil, fmt.Errorf("parse offer: %w", err)
	}
	var md *sdp.MediaDescription
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media == "audio" && m.MediaName.Port.Value != 0 {
			md = m
			break
		}
	}
	if md == nil {
		return nil, errors.New("offer has no active audio stream")
	}
	conn := sd.ConnectionInformation
	if md.ConnectionInformation != nil {
		conn = md.ConnectionInformation
	}
	if conn == nil || conn.Address == nil {
		return nil, errors.New("offer has no connection address")
	}
	ip, err := netip.ParseAddr(conn.Address.Address)
	if err != nil {
		return nil, fmt.Errorf("offer address %q: %w", conn.Address.Address, err)
	}
	remote := netip.AddrPortFrom(ip, uint16(md.MediaName.Port.Value))

	rtpmaps := map[string]string{}
	fmtps := map[string]string{}
	var cryptoTag, cryptoKey string
	fpAttr, _ := sd.Attribute("fingerprint")
	setupAttr, _ := sd.Attribute("setup")
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			if pt, v, ok := strings.Cut(a.Value, " "); ok {
				rtpmaps[pt] = v
			}
		case "fmtp":
			if pt, v, ok := strings.Cut(a.Value, " "); ok {
				fmtps[pt] = v
			}
		case "fingerprint":
			fpAttr = a.Value
		case "setup":
			setupAttr = a.Value
		case "crypto":
			// a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY[|lifetime][|mki]
			f := strings.Fields(a.Value)
			if cryptoTag == "" && len(f) >= 3 && f[1] == "AES_CM_128_HMAC_SHA1_80" && strings.HasPrefix(f[2], "inline:") {
				cryptoTag = f[0]
				cryptoKey, _, _ = strings.Cut(strings.TrimPrefix(f[2], "inline:"), "|")
			}
		}
	}
	var pt, rtpmap string
	for _, f := range md.MediaName.Formats {
		name := rtpmaps[f]
		switch {
		case f == "0" && name == "":
			name = "PCMU/8000"
		case f == "8" && name == "":
			name = "PCMA/8000"
		}
		n, _, _ := strings.Cut(strings.ToLower(name), "/")
		if n == "pcmu" || n == "pcma" || n == "opus" {
			pt, rtpmap = f, name
			break
		}
	}
	if pt == "" {
		return nil, fmt.Errorf("no supported codec in %v", md.MediaName.Formats)
	}
	proto := strings.Join(md.MediaName.Protos, "/")
	c := &uasCall{id: key, remote: remote, codec: rtpmap, ssrc: randUint32(), outSeq: uint16(randUint32()),
		t0: time.Now(), tsBase: randUint32(), rate: int64(clockRateOf(rtpmap))}
	c.stats = NewRecvStats(clockRateOf(rtpmap))
	var cryptoLine string
	var dtlsClient bool
	var fpHash, fp string
	switch {
	case strings.Contains(proto, "TLS"):
		// DTLS-SRTP: our role is the opposite of the offer's; to actpass
		// we answer passive, so the browser's ClientHello, sent once its
		// ICE pair works, starts the handshake without waiting on a
		// retransmission timer.
		var err error
		if fpHash, fp, err = mrsdp.ParseFingerprint(fpAttr); err != nil {
			return nil, fmt.Errorf("%s offer: %w", proto, err)
		}
		setup := mrsdp.SetupActPass
		if setupAttr != "" {
			if setup, err = mrsdp.ParseSetup(setupAttr); err != nil {
				return nil, fmt.Errorf("%s offer: %w", proto, err)
			}
		}
		dtlsClient = setup == mrsdp.SetupPassive
		role := mrsdp.SetupPassive
		if dtlsClient {
			role = mrsdp.SetupActive
		}
		c.dtls = &uasDTLS{conn: u.rtpConn, to: remote, in: make(chan []byte, 16), done: make(chan struct{})}
		cryptoLine = fmt.Sprintf("a=fingerprint:%s\r\na=setup:%s\r\na=rtcp-mux\r\na=ssrc:%d cname:bench-uas\r\n", u.id.fp, role, c.ssrc)
	case strings.Contains(proto, "SAVP"):
		if cryptoKey == "" {
			return nil, fmt.Errorf("%s offer without a usable AES_CM_128_HMAC_SHA1_80 a=crypto", proto)
		}
		km, err := base64.StdEncoding.DecodeString(cryptoKey)
		if err != nil || len(km) != 30 {
			return nil, fmt.Errorf("a=crypto key: want 30 bytes of base64, got %d (%v)", len(km), err)
		}
		if c.rx, err = srtp.CreateContext(km[:16], km[16:], srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
			return nil, fmt.Errorf("srtp rx context: %w", err)
		}
		ours := make([]byte, 30)
		_, _ = rand.Read(ours)
		if c.tx, err = srtp.CreateContext(ours[:16], ours[16:], srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
			return nil, fmt.Errorf("srtp tx context: %w", err)
		}
		cryptoLine = fmt.Sprintf("a=crypto:%s AES_CM_128_HMAC_SHA1_80 inline:%s\r\n", cryptoTag, base64.StdEncoding.EncodeToString(ours))
	}

	u.mu.Lock()
	old := u.byID[key]
	if old != nil {
		delete(u.byAddr, old.remote)
	}
	u.byID[key] = c
	u.byAddr[remote] = c
	u.mu.Unlock()
	if old != nil && old.dtls != nil {
		old.dtls.release()
	}
	if c.dtls != nil {
		go u.handshake(c.dtls, dtlsClient, fpHash, fp)
	}

	sess := strconv.FormatUint(uint64(randUint32()), 10)
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=- %s %s IN IP4 127.0.0.1\r\ns=mediarelay-bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n", sess, sess)
	fmt.Fprintf(&b, "m=audio %d %s %s\r\n", u.rtpPort, proto, pt)
	fmt.Fprintf(&b, "a=rtpmap:%s %s\r\n", pt, rtpmap)
	if f, ok := fmtps[pt]; ok {
		fmt.Fprintf(&b, "a=fmtp:%s %s\r\n", pt, f)
	}
	b.WriteString(cryptoLine)
	b.WriteString("a=ptime:20\r\na=sendrecv\r\n")
	return []byte(b.String()), nil
}

// Release forgets a call (after BYE, or when the rtpengine driver deletes it).
func (u *UAS) Release(key string) {
	u.mu.Lock()
	c := u.byID[key]
	if c != nil {
		delete(u.byAddr, c.remote)
		delete(u.byID, key)
	}
	u.mu.Unlock()
	if c != nil && c.dtls != nil {
		c.dtls.release()
	}
}

// CallStats reads the browser->trunk stream of the call filed under key.
func (u *UAS) CallStats(key string) (StreamSnapshot, bool) {
	u.mu.RLock()
	c := u.byID[key]
	u.mu.RUnlock()
	if c == nil {
		return StreamSnapshot{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.Snapshot(), true
}

// TakeDelays returns and clears the one-way browser->trunk delay samples (ms) of the call filed under key.
func (u *UAS) TakeDelays(key string) []float64 {
	u.mu.RLock()
	c := u.byID[key]
	u.mu.RUnlock()
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.upDelay
	c.upDelay = nil
	return d
}

// readRTP serves the RTP socket until it is closed: each batch of
// datagrams is handled in order, and the echoes it produced leave
// together.
func (u *UAS) readRTP() {
	b, err := newRTPBatch(u.rtpConn)
	if err != nil {
		u.log.Error("uas: no RTP", "err", err)
		return
	}
	var s rtpScratch
	for {
		n, err := b.read()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		now := time.Now()
		for i := range n {
			pkt, src, at, ok := b.at(i)
			if !ok {
				continue
			}
			arrival := now
			if at != 0 {
				// On now's monotonic clock: a datagram that waited in the
				// socket is timed as it arrived.
				arrival = now.Add(time.Duration(at - now.UnixNano()))
			}
			if echo := u.rtp(pkt, src, arrival, now, &s); echo != nil {
				_ = b.queue(echo, src) // IPv4 sources only, as read gives them
			}
		}
		if err := b.flush(); errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// rtpScratch is readRTP's buffers, reused from packet to packet.
type rtpScratch struct {
	plain, out, enc [slotSize]byte
	hdr             rtp.Header
}

// rtp handles one datagram from src that arrived at arrival, in a batch
// read at now, and returns its echo (in s, valid until the next call), or
// nil when there is none to send.
func (u *UAS) rtp(pkt []byte, src netip.AddrPort, arrival, now time.Time, s *rtpScratch) []byte {
	u.mu.RLock()
	c := u.byAddr[src]
	u.mu.RUnlock()
	if c == nil {
		u.unknown.Add(1)
		return nil
	}
	rx, tx := c.rx, c.tx
	if d := c.dtls; d != nil {
		// RFC 7983: DTLS records go to the call's handshake; media
		// waits for its keys; SRTCP (rtcp-mux) is not measured.
		if len(pkt) == 0 {
			return nil
		}
		if b := pkt[0]; b >= 20 && b <= 63 {
			d.record(pkt)
			return nil
		}
		k := d.keys.Load()
		if k == nil || media.IsRTCP(pkt) {
			return nil
		}
		rx, tx = k.rx, k.tx
	}
	hdr := &s.hdr
	var hl int
	var err error
	if rx != nil {
		if pkt, err = rx.DecryptRTP(s.plain[:0], pkt, hdr); err != nil {
			return nil
		}
		hl = hdr.MarshalSize()
	} else if hl, err = hdr.Unmarshal(pkt); err != nil {
		return nil
	}
	payload := pkt[hl:]
	if hdr.Padding && len(payload) > 0 {
		// RTP padding (not Opus padding): the last byte counts it.
		if p := int(payload[len(payload)-1]); p <= len(payload) {
			payload = payload[:len(payload)-p]
		}
	}
	sendNs, _, hasMarker := readMarker(payload)
	c.mu.Lock()
	c.stats.Update(hdr.SequenceNumber, hdr.Timestamp, arrival)
	if hasMarker && u.measuring.Load() {
		c.upDelay = append(c.upDelay, float64(int64(arrival.Sub(epoch))-sendNs)/1e6)
	}
	seq := c.outSeq
	c.outSeq++
	c.mu.Unlock()
	if !u.echo {
		return nil
	}
	// Echo with our own SSRC, sequence and timestamps, so loss and jitter
	// on the way back are measured independently of the way in.
	ts := c.tsBase + uint32(int64(now.Sub(c.t0))*c.rate/int64(time.Second))
	oh := rtp.Header{Version: 2, PayloadType: hdr.PayloadType, SequenceNumber: seq, Timestamp: ts, SSRC: c.ssrc, Marker: hdr.Marker}
	ohl, err := oh.MarshalTo(s.out[:])
	if err != nil || ohl+len(payload) > len(s.out) {
		return nil
	}
	m := copy(s.out[ohl:], payload)
	if hasMarker {
		// How long the frame was held here since its send, for the
		// client to take out of the round trip: the echo leaves with
		// this batch.
		off := (nowNs() - sendNs) / 1000
		if off < 0 {
			off = 0
		}
		setMarkerHold(s.out[ohl:ohl+m], uint32(off))
	}
	o := s.out[:ohl+m]
	if tx != nil {
		if o, err = tx.EncryptRTP(s.enc[:0], o, &oh); err != nil {
			return nil
		}
	}
	return o
}

func clockRateOf(rtpmap string) int {
	f := strings.Split(rtpmap, "/")
	if len(f) >= 2 {
		if r, err := strconv.Atoi(f[1]); err == nil && r > 0 {
			return r
		}
	}
	return 8000
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
