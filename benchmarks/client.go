package benchmarks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
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

// Client is the browser-like load client. Every call is a pion
// PeerConnection, but all of them share one UDP socket (ICE UDP mux), one
// DTLS certificate, and one sender goroutine that writes a pre-encoded frame
// for every active call each 20 ms. Pion's own per-connection goroutines
// (ICE, DTLS, SRTP readers) and one reader per remote track remain.
type Client struct {
	codec  Codec
	frames [][]byte
	api    *webrtc.API // calls share one UDP socket (ICE UDP mux)
	apiOwn *webrtc.API // each call gets its own UDP socket
	cert   webrtc.Certificate
	udp    *net.UDPConn
	mux    ice.UDPMux
	log    *slog.Logger

	mu     sync.Mutex
	active []*call // copy-on-write: the sender reads a snapshot without locking per packet

	measuring atomic.Bool
	sent      atomic.Uint64
	recv      atomic.Uint64
}

// call is one browser call.
type call struct {
	idx  int
	id   string // SIP Call-ID (or ng call-id)
	user string // called user: also the key under which the UAS files the call
	pc   *webrtc.PeerConnection
	tr   *webrtc.TrackLocalStaticRTP
	sig  signaler
	dlg  *sipDialog
	ws   *sipWS

	pkt      rtp.Packet
	payload  []byte
	frame    int
	sending  atomic.Bool
	dropped  atomic.Bool // the relay ended it, or ICE/DTLS failed after setup
	connCh   chan webrtc.PeerConnectionState
	firstCh  chan struct{}
	firstOne sync.Once

	tInvite, t200, tFirst time.Time
	code                  int
	failReason            string

	mu        sync.Mutex
	stats     *RecvStats
	downDelay []float64 // ms, trunk -> browser one-way
	rtt       []float64 // ms, round trip through the echo
}

// NewClient prepares the shared pion API, socket and certificate.
func NewClient(codec Codec, log *slog.Logger) (*Client, error) {
	frames, err := Frames(codec)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("client udp listen: %w", err)
	}
	_ = udp.SetReadBuffer(8 << 20)
	_ = udp.SetWriteBuffer(8 << 20)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	mux := webrtc.NewICEUDPMux(lf.NewLogger("mux"), udp)

	var se webrtc.SettingEngine
	se.LoggerFactory = lf
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// An echo can send RTP back before pion has finished applying the answer;
	// without this, pion drops that SSRC for good and OnTrack never fires.
	se.SetHandleUndeclaredSSRCWithoutAnswer(true)

	me := &webrtc.MediaEngine{}
	cap := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}
	if codec.Name == "opus" {
		cap = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: cap, PayloadType: webrtc.PayloadType(codec.PayloadType)}, webrtc.RTPCodecTypeAudio); err != nil {
		udp.Close()
		return nil, fmt.Errorf("register codec: %w", err)
	}
	// No interceptors: no NACK, no RTCP reports. A browser would send RTCP,
	// but the relay's forwarding cost is what we measure, and interceptors
	// would add a goroutine and timers per call to the load client.
	// NewAPI adds pion's default interceptors unless given a registry.
	noInterceptors := webrtc.WithInterceptorRegistry(&interceptor.Registry{})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), noInterceptors)
	// A relay that also serves every WebRTC leg from one port (mediarelay)
	// would see every call on the same 5-tuple if the client shared one
	// socket too: nothing could tell the calls apart after ICE. Against such
	// a relay each call needs its own local port, as each browser has.
	own := se
	own.SetICEUDPMux(nil)
	own.SetEphemeralUDPPortRange(20000, 60999)
	apiOwn := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(own), noInterceptors)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("dtls key: %w", err)
	}
	cert, err := webrtc.GenerateCertificate(key)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("dtls certificate: %w", err)
	}
	return &Client{codec: codec, frames: frames, api: api, apiOwn: apiOwn, cert: *cert, udp: udp, mux: mux, log: log}, nil
}

// Close releases the shared socket.
func (cl *Client) Close() {
	_ = cl.mux.Close()
	_ = cl.udp.Close()
}

// SetMeasuring turns delay sampling on or off.
func (cl *Client) SetMeasuring(on bool) { cl.measuring.Store(on) }

// Run sends media until ctx ends: senders goroutines (normally one), each
// writing, every 20 ms, the next frame of its share of the active calls. A
// call always belongs to the same sender (by index), so its packet state is
// never touched by two goroutines.
func (cl *Client) Run(ctx context.Context, senders int) {
	if senders < 1 {
		senders = 1
	}
	var wg sync.WaitGroup
	for k := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl.sendLoop(ctx, k, senders)
		}()
	}
	wg.Wait()
}

func (cl *Client) sendLoop(ctx context.Context, shard, shards int) {
	const ptime = 20 * time.Millisecond
	next := time.Now()
	timer := time.NewTimer(ptime)
	defer timer.Stop()
	for {
		next = next.Add(ptime)
		d := time.Until(next)
		if d < -5*ptime {
			// Far behind (machine saturated): skip rather than burst.
			next = time.Now()
			d = 0
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		cl.mu.Lock()
		calls := cl.active
		cl.mu.Unlock()
		t0 := time.Now()
		for _, c := range calls {
			if c.idx%shards != shard || !c.sending.Load() {
				continue
			}
			cl.sendFrame(c)
		}
		if el := time.Since(t0); el > 10*time.Millisecond {
			cl.log.Debug("slow send tick", "calls", len(calls), "took", el, "late", -d)
		}
	}
}

func (cl *Client) sendFrame(c *call) {
	f := cl.frames[c.frame]
	c.frame = (c.frame + 1) % len(cl.frames)
	c.payload = append(c.payload[:0], f...)
	stampMarker(c.payload, nowNs())
	c.pkt.Payload = c.payload
	c.pkt.SequenceNumber++
	c.pkt.Timestamp += cl.codec.TSPerFrame
	if err := c.tr.WriteRTP(&c.pkt); err == nil {
		cl.sent.Add(1)
	}
}

func (cl *Client) addActive(c *call) {
	cl.mu.Lock()
	a := make([]*call, len(cl.active), len(cl.active)+1)
	copy(a, cl.active)
	cl.active = append(a, c)
	cl.mu.Unlock()
}

func (cl *Client) removeActive(c *call) {
	cl.mu.Lock()
	a := make([]*call, 0, len(cl.active))
	for _, x := range cl.active {
		if x != c {
			a = append(a, x)
		}
	}
	cl.active = a
	cl.mu.Unlock()
}

// errSetup tags why a call failed, for the failure table.
type errSetup struct {
	reason string
	err    error
}

func (e *errSetup) Error() string { return e.reason + ": " + e.err.Error() }

// place sets a call up: offer, signalling, ICE+DTLS, first audio back. It
// returns once media flows both ways or the call failed.
func (cl *Client) place(ctx context.Context, c *call, mediaTimeout time.Duration, sharedSocket bool) error {
	api := cl.apiOwn
	if sharedSocket {
		api = cl.api
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{Certificates: []webrtc.Certificate{cl.cert}})
	if err != nil {
		return &errSetup{"local", fmt.Errorf("new peer connection: %w", err)}
	}
	c.pc = pc
	c.connCh = make(chan webrtc.PeerConnectionState, 4)
	c.firstCh = make(chan struct{})
	c.stats = NewRecvStats(cl.codec.ClockRate)
	tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: "audio/" + cl.codec.Name, ClockRate: uint32(cl.codec.ClockRate), Channels: uint16(cl.codec.Channels)}, "audio", "bench")
	if err != nil {
		return &errSetup{"local", err}
	}
	c.tr = tr
	if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
		return &errSetup{"local", fmt.Errorf("add transceiver: %w", err)}
	}
	c.pkt.Header = rtp.Header{Version: 2, PayloadType: cl.codec.PayloadType, SequenceNumber: uint16(randUint32()), Timestamp: randUint32()}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		select {
		case c.connCh <- s:
		default:
		}
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateDisconnected {
			c.sending.Store(false)
			c.dropped.Store(true)
		}
	})
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { cl.readTrack(c, t) })

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return &errSetup{"local", fmt.Errorf("create offer: %w", err)}
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return &errSetup{"local", fmt.Errorf("set local description: %w", err)}
	}
	tGather := time.Now()
	select {
	case <-gathered:
	case <-ctx.Done():
		return &errSetup{"local", ctx.Err()}
	}
	c.tInvite = time.Now()
	cl.log.Debug("gathered", "call", c.user, "took", c.tInvite.Sub(tGather))
	answer, code, err := c.sig.Setup(ctx, c, pc.LocalDescription().SDP)
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
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return &errSetup{"sdp", fmt.Errorf("set remote description: %w", err)}
	}
	deadline := time.NewTimer(mediaTimeout)
	defer deadline.Stop()
	for connected := false; !connected; {
		select {
		case s := <-c.connCh:
			switch s {
			case webrtc.PeerConnectionStateConnected:
				connected = true
			case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
				return &errSetup{"ice/dtls", fmt.Errorf("peer connection %s", s)}
			}
		case <-deadline.C:
			return &errSetup{"ice/dtls", fmt.Errorf("not connected after %s", mediaTimeout)}
		case <-ctx.Done():
			return &errSetup{"ice/dtls", ctx.Err()}
		}
	}
	c.sending.Store(true)
	cl.addActive(c)
	select {
	case <-c.firstCh:
	case <-deadline.C:
		return &errSetup{"no-audio", fmt.Errorf("no audio back within %s", mediaTimeout)}
	case <-ctx.Done():
		return &errSetup{"no-audio", ctx.Err()}
	}
	return nil
}

// readTrack runs in the goroutine pion starts for OnTrack: it reads the
// decrypted RTP of the remote track until the connection closes.
func (cl *Client) readTrack(c *call, t *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var h rtp.Header
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		now := time.Now()
		hl, err := h.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		payload := buf[hl:n]
		if h.Padding && len(payload) > 0 {
			if p := int(payload[len(payload)-1]); p <= len(payload) {
				payload = payload[:len(payload)-p]
			}
		}
		cl.recv.Add(1)
		c.firstOne.Do(func() {
			c.tFirst = now
			close(c.firstCh)
		})
		sendNs, echoOff, ok := readMarker(payload)
		c.mu.Lock()
		c.stats.Update(h.SequenceNumber, h.Timestamp, now)
		if ok && cl.measuring.Load() {
			rx := nowNs()
			c.rtt = append(c.rtt, float64(rx-sendNs)/1e6)
			if echoOff > 0 {
				c.downDelay = append(c.downDelay, float64(rx-sendNs-int64(echoOff)*1000)/1e6)
			}
		}
		c.mu.Unlock()
	}
}

// hangup stops media, ends the call's signalling and closes its connection.
func (cl *Client) hangup(ctx context.Context, c *call) error {
	c.sending.Store(false)
	cl.removeActive(c)
	var err error
	if c.t200 != (time.Time{}) && !c.dropped.Load() {
		err = c.sig.Teardown(ctx, c)
	}
	if c.pc != nil {
		if cerr := c.pc.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

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
