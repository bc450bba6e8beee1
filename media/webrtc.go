package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// WebRTCOptions configures the WebRTC side of a relay.
type WebRTCOptions struct {
	// BindIP and Port are where the one UDP socket shared by every WebRTC
	// leg listens (ICE UDP mux), so operators open a single port.
	BindIP string
	Port   int
	// PublicIP, when set, is advertised in ICE candidates instead of the
	// socket's address (NAT 1:1).
	PublicIP string
	// ConnectTimeout bounds ICE+DTLS after the answer is sent.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// WebRTC holds what all WebRTC legs share: the UDP mux socket and the
// settings derived from the options.
type WebRTC struct {
	opts     WebRTCOptions
	conn     *net.UDPConn
	mux      interface{ Close() error }
	settings webrtc.SettingEngine
	log      *slog.Logger
}

// NewWebRTC opens the shared UDP socket.
func NewWebRTC(o WebRTCOptions) (*WebRTC, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 20 * time.Second
	}
	addr := &net.UDPAddr{IP: net.ParseIP(o.BindIP), Port: o.Port}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("webrtc udp port %s: %w", addr, err)
	}
	// Every WebRTC leg's packets queue on this one socket behind one reader:
	// the kernel's default receive buffer (~200 KB) overflows at a few
	// hundred calls, so ask for more (SO_RCVBUFFORCE when root).
	if err := setReadBuffer(conn, webrtcReadBuffer); err != nil {
		o.Logger.Warn("webrtc udp port: receive buffer not raised", "err", err)
	}
	mux := webrtc.NewICEUDPMux(nil, conn)

	var s webrtc.SettingEngine
	// ICE-lite: the relay has a reachable address, so the browser does the
	// checks and we answer them; it saves a round of checks on setup.
	s.SetLite(true)
	s.SetICEUDPMux(mux)
	s.SetIncludeLoopbackCandidate(true)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	s.SetICETimeouts(5*time.Second, 15*time.Second, 2*time.Second)
	if o.PublicIP != "" {
		s.SetNAT1To1IPs([]string{o.PublicIP}, webrtc.ICECandidateTypeHost)
	}
	return &WebRTC{opts: o, conn: conn, mux: mux, settings: s, log: o.Logger}, nil
}

// LocalAddr is the shared UDP socket's address.
func (w *WebRTC) LocalAddr() net.Addr { return w.conn.LocalAddr() }

// Close closes the shared socket; legs still open fail.
func (w *WebRTC) Close() error { return w.mux.Close() }

// codecCapability maps a codec name to what pion registers.
func codecCapability(name string) (webrtc.RTPCodecCapability, error) {
	switch strings.ToLower(name) {
	case "opus":
		return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"}, nil
	case "pcmu":
		return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}, nil
	case "pcma":
		return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000, Channels: 1}, nil
	case "g722":
		return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeG722, ClockRate: 8000, Channels: 1}, nil
	}
	return webrtc.RTPCodecCapability{}, fmt.Errorf("codec %q not supported on the webrtc leg", name)
}

// WebRTCLeg is the browser side of a call: one PeerConnection with one audio
// track each way. It implements ReadRTP/WriteRTP like the RTP leg.
type WebRTCLeg struct {
	pc    *webrtc.PeerConnection
	track *localTrack
	log   *slog.Logger

	// Audio is the negotiated audio stream of our answer: the chosen codec
	// with the browser's payload type, and telephone-event if offered.
	Audio sdp.Audio

	remote    chan *webrtc.TrackRemote
	remoteTr  *webrtc.TrackRemote
	connected chan struct{}
	failed    chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	failOnce  sync.Once

	rx       recvStats
	out      atomic.Uint64
	outBytes atomic.Uint64
	dropped  atomic.Uint64
	hdr      rtp.Header // reused by WriteRTP; only the forwarding goroutine writes

	connectTimeout time.Duration // for legs made by Offer: ICE+DTLS bound after SetAnswer
}

// Answer creates a leg that answers the browser's offer with codec (opus,
// PCMU or PCMA) and telephone-event, and returns the answer SDP with its ICE
// candidates. Nothing is sent before the browser starts ICE.
func (w *WebRTC) Answer(offer string, codec string) (*WebRTCLeg, string, error) {
	capab, err := codecCapability(codec)
	if err != nil {
		return nil, "", err
	}
	_, offered, err := sdp.Parse([]byte(offer))
	if err != nil {
		return nil, "", fmt.Errorf("browser offer: %w", err)
	}
	c, ok := offered.Find(codec)
	if !ok {
		return nil, "", fmt.Errorf("browser offer has no %s", codec)
	}
	var m webrtc.MediaEngine
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: capab, PayloadType: webrtc.PayloadType(c.PT)},
		webrtc.RTPCodecTypeAudio); err != nil {
		return nil, "", fmt.Errorf("register %s: %w", codec, err)
	}
	// Answer telephone-event only at the audio codec's clock when the browser
	// offers it there: given both, Chrome may pick the other one, which
	// neither the forwarder nor the bridge can re-time.
	evClock := uint32(0)
	if _, ok := offered.DTMF(capab.ClockRate); ok {
		evClock = capab.ClockRate
	}
	for _, ev := range offered.Codecs {
		if !ev.Is("telephone-event") || (evClock != 0 && ev.Clock != evClock) {
			continue
		}
		capEv := webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: ev.Clock, Channels: 1, SDPFmtpLine: ev.Fmtp}
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: capEv, PayloadType: webrtc.PayloadType(ev.PT)},
			webrtc.RTPCodecTypeAudio); err != nil {
			return nil, "", fmt.Errorf("register telephone-event: %w", err)
		}
	}
	// An empty interceptor registry: pion's defaults (NACK, TWCC, RTCP
	// reports) allocate per packet and buy nothing for relayed audio.
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&m), webrtc.WithSettingEngine(w.settings),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{}))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", fmt.Errorf("peer connection: %w", err)
	}
	l := w.newLeg(pc, capab)
	fail := func(err error) (*WebRTCLeg, string, error) {
		_ = pc.Close()
		return nil, "", err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail(fmt.Errorf("browser offer: %w", err))
	}
	sender, err := pc.AddTrack(l.track)
	if err != nil {
		return fail(fmt.Errorf("add track: %w", err))
	}
	// RTCP from the browser must be read or pion's buffers fill.
	go drainRTCP(sender)
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(fmt.Errorf("create answer: %w", err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(fmt.Errorf("set answer: %w", err))
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		return fail(errors.New("ice gathering did not complete"))
	}
	local := pc.LocalDescription().SDP
	_, l.Audio, err = sdp.Parse([]byte(local))
	if err != nil {
		return fail(fmt.Errorf("own answer: %w", err))
	}
	if len(l.Audio.Codecs) == 0 || l.Audio.Port == 0 {
		return fail(fmt.Errorf("browser offer: no usable audio for %s", codec))
	}
	go l.watchConnect(w.opts.ConnectTimeout)
	return l, local, nil
}

// watchConnect fails the leg when ICE/DTLS does not complete in time; pion
// alone would wait for a browser that never starts checks.
func (l *WebRTCLeg) watchConnect(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.connected:
	case <-l.closed:
	case <-t.C:
		l.failOnce.Do(func() { close(l.failed) })
	}
}

// Failed is closed when ICE or DTLS fails or never completes.
func (l *WebRTCLeg) Failed() <-chan struct{} { return l.failed }

// Connected is closed once ICE and DTLS have completed.
func (l *WebRTCLeg) Connected() <-chan struct{} { return l.connected }

// ReadRTP returns the next decrypted RTP packet from the browser.
func (l *WebRTCLeg) ReadRTP(b []byte) (int, error) {
	if l.remoteTr == nil {
		select {
		case t := <-l.remote:
			l.remoteTr = t
		case <-l.closed:
			return 0, net.ErrClosed
		}
	}
	for {
		n, _, err := l.remoteTr.Read(b)
		if err != nil {
			return 0, err
		}
		if _, ok := RTPHeaderLen(b[:n]); !ok {
			l.dropped.Add(1)
			continue
		}
		l.rx.update(b[:n], time.Now())
		return n, nil
	}
}

// WriteRTP sends one RTP packet to the browser, with the SSRC announced in
// our answer. Packets before DTLS completes are dropped.
func (l *WebRTCLeg) WriteRTP(b []byte) error {
	hl, ok := RTPHeaderLen(b)
	if !ok {
		return errors.New("webrtc leg: malformed rtp")
	}
	ws, ssrc := l.track.writer()
	if ws == nil {
		return nil
	}
	h := &l.hdr
	h.Version = 2
	h.Padding = false
	h.Extension = false
	h.Marker = Marker(b)
	h.PayloadType = PayloadType(b)
	h.SequenceNumber = Seq(b)
	h.Timestamp = Timestamp(b)
	h.SSRC = ssrc
	payload := b[hl : hl+rtpPayloadLen(b, hl)]
	if _, err := ws.WriteRTP(h, payload); err != nil {
		return fmt.Errorf("webrtc leg: %w", err)
	}
	l.out.Add(1)
	l.outBytes.Add(uint64(len(b)))
	return nil
}

// Stats returns the leg's counters.
func (l *WebRTCLeg) Stats() LegStats {
	s := LegStats{
		PacketsIn:  l.rx.packets.Load(),
		BytesIn:    l.rx.bytes.Load(),
		PacketsOut: l.out.Load(),
		BytesOut:   l.outBytes.Load(),
		Dropped:    l.dropped.Load(),
		Lost:       l.rx.totalLost(),
		Jitter:     l.rx.jitterMs(),
	}
	if ns := l.rx.lastRecv.Load(); ns != 0 {
		s.LastReceived = time.Unix(0, ns)
	}
	return s
}

// Close ends the PeerConnection; ReadRTP returns an error afterwards.
func (l *WebRTCLeg) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.pc.Close()
	})
	return err
}

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

// localTrack is a TrackLocal that hands the relay the bound write stream,
// so forwarding writes a header and payload without pion's per-packet
// unmarshal in TrackLocalStaticRTP.
type localTrack struct {
	capab webrtc.RTPCodecCapability
	mu    sync.Mutex
	ws    atomic.Pointer[boundWriter]
}

type boundWriter struct {
	w    webrtc.TrackLocalWriter
	ssrc uint32
}

func (t *localTrack) writer() (webrtc.TrackLocalWriter, uint32) {
	b := t.ws.Load()
	if b == nil {
		return nil, 0
	}
	return b.w, b.ssrc
}

// Bind is called by pion once the answer is applied.
func (t *localTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, t.capab.MimeType) {
			t.ws.Store(&boundWriter{w: ctx.WriteStream(), ssrc: uint32(ctx.SSRC())})
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

// Unbind stops writes.
func (t *localTrack) Unbind(webrtc.TrackLocalContext) error {
	t.ws.Store(nil)
	return nil
}

// ID names the track.
func (t *localTrack) ID() string { return "audio" }

// RID is empty: no simulcast.
func (t *localTrack) RID() string { return "" }

// StreamID groups the track.
func (t *localTrack) StreamID() string { return "mediarelay" }

// Kind is audio.
func (t *localTrack) Kind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeAudio }

// webrtcReadBuffer is the receive buffer asked for on the shared WebRTC
// socket: about a second of traffic for 1000 calls.
const webrtcReadBuffer = 16 << 20
