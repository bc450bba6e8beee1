package signaling

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
)

// portBase spreads RTP port ranges between relays started by one test
// binary, in 16000-19999: below the kernel's ephemeral ports (32768+), where
// the sockets of tests running beside us land, and apart from the media
// tests (10000-15999) and baresip's RTP (20000-29999).
var (
	portMu   sync.Mutex
	portBase = 16000 + (os.Getpid()%100)*40
)

// nextPortRange returns a fresh range of 20 RTP port pairs.
func nextPortRange() (int, int) {
	portMu.Lock()
	defer portMu.Unlock()
	if portBase+40 > 20000 {
		portBase = 16000
	}
	lo := portBase
	portBase += 40
	return lo, lo + 39
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("MEDIARELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// Keep the relay's log and show it only when the test fails, so a
	// failure seen once in CI says why.
	w := logOnFailure(t, "relay")
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logOnFailure returns a log that the test prints, as name's log, if it fails.
func logOnFailure(t *testing.T, name string) *syncBuffer {
	b := &syncBuffer{max: 1 << 20}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, b.String())
		}
	})
	return b
}

// startRelay runs a relay on loopback with ephemeral ports until the test ends.
func startRelay(t *testing.T, mod func(*config.Config)) *Relay {
	t.Helper()
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.UDPListen = "127.0.0.1:0"
	cfg.SIP.TCPListen = "127.0.0.1:0"
	cfg.Media.BindIP = "127.0.0.1"
	cfg.Media.WebRTCPort = 0
	cfg.Media.PortMin, cfg.Media.PortMax = nextPortRange()
	cfg.CDR.Path = filepath.Join(t.TempDir(), "cdr.db")
	cfg.SIP.InviteTimeout = 3 * time.Second
	// Tests that are not about caller authentication call trunks
	// anonymously; callauth_test.go turns this off.
	cfg.SIP.AnonymousCalls = true
	// and place calls faster than a source may in production (ratelimit_test.go).
	cfg.SIP.InviteRate, cfg.SIP.InviteBurst = 1000, 1000
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	select {
	case <-r.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("relay did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// trunkUAS is a SIP peer on loopback standing in for a carrier or PBX.
type trunkUAS struct {
	dialogBook
	t    *testing.T
	addr string
	ip   netip.Addr // where its SIP and RTP sockets listen
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	dua  *sipgo.DialogUA

	// behaviour, set before calls are placed
	code     int                 // final code; 0 or 200 answers
	codecs   []string            // codecs it accepts, in its preference; nil = first offered
	ring     bool                // send 180 first
	noAnswer bool                // ring forever
	early    bool                // 183 with SDP before the 200
	echo     bool                // echo RTP back
	capture  chan []byte         // if set, a copy of every RTP packet received; set with setCapture
	byeAfter time.Duration       // hang up after answering
	stream   int                 // after the ACK, send this many packets of a tone at 50 packets/s
	streamed chan int            // with stream: how many packets were sent, once done
	rewrite  func([]byte) []byte // if set, applied to its SDP answer

	lastOffer atomic.Pointer[string] // the SDP of the last INVITE it answered

	mu       sync.Mutex
	conns    []*net.UDPConn
	byes     chan struct{}
	cancels  chan struct{}
	answered chan struct{}
}

func newTrunkUAS(t *testing.T) *trunkUAS { return newTrunkUASAt(t, "127.0.0.1") }

// newTrunkUASAt is newTrunkUAS listening on ip (for IPv6: "::1").
func newTrunkUASAt(t *testing.T, ip string) *trunkUAS {
	t.Helper()
	u := &trunkUAS{t: t, echo: true, byes: make(chan struct{}, 10), cancels: make(chan struct{}, 10), answered: make(chan struct{}, 10),
		streamed: make(chan int, 10), ip: netip.MustParseAddr(ip)}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	u.ua, _ = sipgo.NewUA(sipgo.WithUserAgent("trunk"), sipgo.WithUserAgentHostname(ip))
	u.srv, _ = sipgo.NewServer(u.ua)
	// Its requests leave from its listener, as a real trunk's do (sockets_test.go).
	cli, _ := sipgo.NewClient(u.ua, sipgo.WithClientHostname(ip), sipgo.WithClientConnectionAddr(u.addr))
	host, port := splitHostPort(u.addr)
	u.dua = &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "trunk", Host: host, Port: port}}}
	u.srv.OnInvite(u.onInvite)
	u.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if d := u.dialog(req); d != nil {
			_ = d.ReadAck(req, tx)
		}
	})
	u.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if d := u.dialog(req); d != nil {
			_ = d.ReadBye(req, tx)
		} else {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
		u.byes <- struct{}{}
	})
	go func() { _ = u.srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		pc.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.ua.Close()
	})
	return u
}

func (u *trunkUAS) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	d, err := u.readInvite(u.dua, req, tx)
	if err != nil {
		return
	}
	if u.code != 0 && u.code != 200 {
		_ = d.Respond(u.code, "Trunk Says No", nil)
		return
	}
	if u.ring || u.noAnswer {
		_ = d.Respond(180, "Ringing", nil)
	}
	if u.noAnswer {
		<-d.Context().Done()
		u.cancels <- struct{}{}
		return
	}
	_, offer, err := sdp.Parse(req.Body())
	if err != nil {
		_ = d.Respond(400, "Bad SDP", nil)
		return
	}
	offered := string(req.Body())
	u.lastOffer.Store(&offered)
	u.mu.Lock() // answerWith may set codecs while the UAS runs
	accept := u.codecs
	u.mu.Unlock()
	var chosen []sdp.Codec
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") {
			continue
		}
		if accept == nil || mediaplan.HasCodec(accept, c.Name) {
			chosen = append(chosen, c)
			break
		}
	}
	if len(chosen) == 0 {
		_ = d.Respond(488, "Not Acceptable Here", nil)
		return
	}
	if ev, ok := offer.DTMF(8000); ok {
		chosen = append(chosen, ev)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.ip, 0)))
	if err != nil {
		_ = d.Respond(503, "No port", nil)
		return
	}
	u.mu.Lock()
	u.conns = append(u.conns, conn)
	capture := u.capture
	u.mu.Unlock()
	go serveRTP(conn, capture, u.echo)
	body := sdp.Offer{SessionID: 1, Version: 1, Addr: u.ip,
		Port: conn.LocalAddr().(*net.UDPAddr).Port, Codecs: chosen}.Marshal()
	if u.rewrite != nil {
		body = u.rewrite(body)
	}
	if u.early {
		res := sip.NewResponseFromRequest(d.InviteRequest, 183, "Session Progress", body)
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = d.WriteResponse(res)
		time.Sleep(300 * time.Millisecond)
	}
	go func() {
		<-d.Context().Done() // BYE either way, or never confirmed
		conn.Close()
	}()
	if err := d.RespondSDP(body); err != nil {
		return
	}
	// RespondSDP returns once the ACK is in.
	u.answered <- struct{}{}
	if u.stream > 0 {
		to := netip.AddrPortFrom(offer.Addr, uint16(offer.Port))
		go func() { u.streamed <- sendToneRTP(conn, to, chosen[0].PT, u.stream) }()
	}
	if u.byeAfter > 0 {
		time.Sleep(u.byeAfter)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Bye(ctx)
	}
}

// setCapture makes the UAS copy the RTP of the calls it answers from now
// on into ch. Under mu: its INVITE handler reads it, on the server's
// goroutines, while a test may be setting it for its next call.
func (u *trunkUAS) setCapture(ch chan []byte) {
	u.mu.Lock()
	u.capture = ch
	u.mu.Unlock()
}

// serveRTP reads conn until it is closed: a copy of each packet goes to
// capture (when set and not full), and with echo each packet goes back to
// where it came from.
func serveRTP(conn *net.UDPConn, capture chan []byte, echo bool) {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if capture != nil {
			select {
			case capture <- append([]byte(nil), buf[:n]...):
			default:
			}
		}
		if echo {
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}
}

// sendToneRTP sends n RTP packets of a 1 kHz tone in μ-law (20 ms each,
// at 50 packets/s) from conn to to with payload type pt, and returns how
// many were sent.
func sendToneRTP(conn *net.UDPConn, to netip.AddrPort, pt uint8, n int) int {
	pcm := make([]int16, 160) // 20 whole cycles: every frame is the same
	for i := range pcm {
		pcm[i] = int16(8000 * math.Sin(2*math.Pi*1000*float64(i)/8000))
	}
	frame := make([]byte, len(pcm))
	transcode.MulawEncode(frame, pcm)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	ssrc := rand.Uint32()
	sent := 0
	for i := 0; i < n; i++ {
		if i > 0 {
			<-tick.C
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, Marker: i == 0,
			SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: ssrc}, Payload: frame}
		b, err := pkt.Marshal()
		if err != nil {
			break
		}
		if _, err := conn.WriteToUDPAddrPort(b, to); err != nil {
			break
		}
		sent++
	}
	return sent
}

// phone is a browser stand-in: SIP over WebSocket with sipgo and a pion
// PeerConnection offering ICE, DTLS-SRTP and the given codecs.
type phone struct {
	t     *testing.T
	ua    *sipgo.UserAgent
	dua   *sipgo.DialogUA
	pc    *webrtc.PeerConnection
	track *webrtc.TrackLocalStaticRTP
	codec webrtc.RTPCodecCapability

	dcs      *sipgo.DialogClientSession
	byes     chan struct{}
	received chan *rtp.Packet
	provs    []int
	opusSeq  uint16 // next sequence number of sendOpusTone
	// authUser and authPass answer the relay's 407 when set.
	authUser, authPass string
}

var phoneCodecs = map[string]webrtc.RTPCodecParameters{
	"opus": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
	"PCMU": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
	"PCMA": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: 8},
	"G729": {RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/G729", ClockRate: 8000}, PayloadType: 18},
}

// newPhone makes a phone offering codecs; it sends with the first.
func newPhone(t *testing.T, codecs ...string) *phone {
	t.Helper()
	return newPhoneOn(t, webrtc.NetworkTypeUDP4, codecs...)
}

// newPhoneOn is newPhone whose ICE uses only network (UDP6: over ::1).
func newPhoneOn(t *testing.T, network webrtc.NetworkType, codecs ...string) *phone {
	t.Helper()
	p := &phone{t: t, byes: make(chan struct{}, 2), received: make(chan *rtp.Packet, 1000)}
	var m webrtc.MediaEngine
	for _, c := range codecs {
		if err := m.RegisterCodec(phoneCodecs[c], webrtc.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: 48000, SDPFmtpLine: "0-16"}, PayloadType: 110},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: 8000, SDPFmtpLine: "0-16"}, PayloadType: 126},
	} {
		if err := m.RegisterCodec(ev, webrtc.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetNetworkTypes([]webrtc.NetworkType{network})
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if network == webrtc.NetworkTypeUDP6 {
		// pion gathers no ::1 from interfaces (it takes it for an
		// IPv4-compatible address); a mux bound to it offers it.
		conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Fatal(err)
		}
		mux := webrtc.NewICEUDPMux(nil, conn)
		t.Cleanup(func() { _ = mux.Close() })
		s.SetICEUDPMux(mux)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&m), webrtc.WithSettingEngine(s))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	p.pc = pc
	p.codec = phoneCodecs[codecs[0]].RTPCodecCapability
	p.track, err = webrtc.NewTrackLocalStaticRTP(p.codec, "audio", "phone")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(p.track); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case p.received <- pkt:
			default:
			}
		}
	})
	t.Cleanup(func() { _ = pc.Close() })

	p.ua, _ = sipgo.NewUA(sipgo.WithUserAgent("phone"), sipgo.WithUserAgentHostname("phone.invalid"))
	srv, _ := sipgo.NewServer(p.ua)
	cli, _ := sipgo.NewClient(p.ua)
	p.dua = &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "alice", Host: "phone.invalid", UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}}}}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if p.dcs != nil {
			_ = p.dcs.ReadBye(req, tx)
		}
		p.byes <- struct{}{}
	})
	// The relay's in-dialog offers (the trunk holds or resumes) are answered
	// with the phone's session in the answering direction; the
	// PeerConnection stays as it is, as the relay keeps ICE and DTLS.
	var reinvites atomic.Uint64
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		dir := "sendrecv"
		for _, d := range []string{"sendonly", "recvonly", "inactive"} {
			if strings.Contains(string(req.Body()), "a="+d) {
				dir = d
			}
		}
		local := p.pc.LocalDescription().SDP
		body := sdp.Rewrite(local, sdp.AnswerDirection(dir), sdp.Version(local)+reinvites.Add(1), "")
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.HeaderClone(&p.dua.ContactHDR))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	t.Cleanup(func() { p.ua.Close() })
	return p
}

func (p *phone) offer() string {
	p.t.Helper()
	o, err := p.pc.CreateOffer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(o); err != nil {
		p.t.Fatal(err)
	}
	<-g
	return p.pc.LocalDescription().SDP
}

// invite sends an INVITE with body to target through the relay's WebSocket.
// It returns the final response.
func (p *phone) invite(ctx context.Context, r *Relay, user string, body []byte) (*sip.Response, error) {
	return p.inviteAddr(ctx, r.HTTPAddr().String(), user, body)
}

// inviteAddr is invite to the relay whose HTTP/WebSocket listener is at addr.
func (p *phone) inviteAddr(ctx context.Context, addr, user string, body []byte) (*sip.Response, error) {
	host, port := splitHostPort(addr)
	target := sip.Uri{User: user, Host: host, Port: port, UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}}
	var hdrs []sip.Header
	if body != nil {
		hdrs = append(hdrs, sip.NewHeader("Content-Type", "application/sdp"))
	}
	dcs, err := p.dua.Invite(ctx, target, body, hdrs...)
	if err != nil {
		return nil, err
	}
	p.dcs = dcs
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.authUser, Password: p.authPass, OnResponse: func(res *sip.Response) error {
		p.provs = append(p.provs, int(res.StatusCode))
		return nil
	}})
	var dr *sipgo.ErrDialogResponse
	if errors.As(err, &dr) {
		return dr.Res, nil
	}
	if err != nil {
		return dcs.InviteResponse, err
	}
	if err := dcs.Ack(ctx); err != nil {
		return nil, err
	}
	return dcs.InviteResponse, nil
}

// call places a WebRTC call and waits for ICE/DTLS to connect.
func (p *phone) call(r *Relay, user string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := p.invite(ctx, r, user, []byte(p.offer()))
	if err != nil {
		p.t.Fatalf("invite: %v", err)
	}
	if res.StatusCode != 200 {
		p.t.Fatalf("call answered %d %s", res.StatusCode, res.Reason)
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(res.Body())}); err != nil {
		p.t.Fatalf("relay answer: %v", err)
	}
	p.waitConnected(ctx)
}

// waitConnected waits for the phone's ICE and DTLS to connect.
func (p *phone) waitConnected(ctx context.Context) {
	p.t.Helper()
	connected := make(chan struct{})
	var once sync.Once
	p.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	if p.pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
		once.Do(func() { close(connected) })
	}
	select {
	case <-connected:
	case <-ctx.Done():
		p.t.Fatal("webrtc leg did not connect")
	}
}

// close ends the phone's PeerConnection and SIP stack.
func (p *phone) close() {
	_ = p.pc.Close()
	_ = p.ua.Close()
}

// hangup sends BYE.
func (p *phone) hangup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.dcs.Bye(ctx); err != nil {
		p.t.Errorf("bye: %v", err)
	}
}

// sendFrames sends n packets, 20 ms apart, each with a payload that names
// its index, and returns the payloads.
func (p *phone) sendFrames(n, size int) [][]byte {
	var sent [][]byte
	tsStep := p.codec.ClockRate / 50
	for i := 0; i < n; i++ {
		payload := make([]byte, size)
		for j := range payload {
			payload[j] = byte(i*7 + j)
		}
		copy(payload, fmt.Sprintf("frame-%04d", i))
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(1000 + i), Timestamp: uint32(5000 + i*int(tsStep)), SSRC: 1234}, Payload: payload}
		if err := p.track.WriteRTP(pkt); err != nil {
			p.t.Fatalf("send: %v", err)
		}
		sent = append(sent, payload)
		time.Sleep(20 * time.Millisecond)
	}
	return sent
}

// collect gathers what arrives until quiet for the given time.
func (p *phone) collect(quiet time.Duration) []*rtp.Packet {
	var got []*rtp.Packet
	for {
		select {
		case pkt := <-p.received:
			got = append(got, pkt)
		case <-time.After(quiet):
			return got
		}
	}
}

// waitFor polls cond; tests use it for effects that land asynchronously.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestMain shortens SIP's transaction timers: on loopback nothing is lost,
// and finished transactions (64*T1) then release their goroutines in
// seconds, which the leak test waits for.
func TestMain(m *testing.M) {
	if path := os.Getenv(childRelayEnv); path != "" {
		os.Exit(runChildRelay(path)) // restart_test.go
	}
	sip.SetTimers(50*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond)
	os.Exit(m.Run())
}

// lastEnd waits for the relay's CDRs to number n and returns the end cause
// and SIP code of the newest, read straight from the SQLite file as an
// operator would.
func lastEnd(t *testing.T, r *Relay, n int) (string, int) {
	t.Helper()
	waitFor(t, "cdr rows", 5*time.Second, func() bool {
		got, _ := r.CDR().Count(context.Background())
		return got == n
	})
	db, err := sql.Open("sqlite", "file:"+r.cfg.CDR.Path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var cause string
	var code int
	if err := db.QueryRow(`SELECT end_cause, sip_code FROM cdr WHERE end_cause != 'in_progress' ORDER BY end_time DESC LIMIT 1`).Scan(&cause, &code); err != nil {
		t.Fatal(err)
	}
	return cause, code
}

// dialogBook remembers the INVITEs and dialogs a test UAS has seen, so
// in-dialog requests (ACK, BYE) find their dialog.
type dialogBook struct {
	bookMu  sync.Mutex
	invites []*sip.Request
	dialogs []*sipgo.DialogServerSession
}

// readInvite records req and opens its dialog.
func (b *dialogBook) readInvite(dua *sipgo.DialogUA, req *sip.Request, tx sip.ServerTransaction) (*sipgo.DialogServerSession, error) {
	b.bookMu.Lock()
	b.invites = append(b.invites, req)
	b.bookMu.Unlock()
	d, err := dua.ReadInvite(req, tx)
	if err != nil {
		return nil, err
	}
	b.bookMu.Lock()
	b.dialogs = append(b.dialogs, d)
	b.bookMu.Unlock()
	return d, nil
}

// dialog finds the dialog an in-dialog request belongs to.
func (b *dialogBook) dialog(req *sip.Request) *sipgo.DialogServerSession {
	id, err := sip.DialogIDFromRequestUAS(req)
	if err != nil {
		return nil
	}
	b.bookMu.Lock()
	defer b.bookMu.Unlock()
	for _, d := range b.dialogs {
		if d.ID == id {
			return d
		}
	}
	return nil
}

// lastInvite is the newest INVITE received, or nil.
func (b *dialogBook) lastInvite() *sip.Request {
	b.bookMu.Lock()
	defer b.bookMu.Unlock()
	if len(b.invites) == 0 {
		return nil
	}
	return b.invites[len(b.invites)-1]
}
