package signaling

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// withUsers adds browser users (name, password pairs) to a relay's config.
func withUsers(pairs ...string) func(*config.Config) {
	return func(c *config.Config) {
		for i := 0; i+1 < len(pairs); i += 2 {
			c.Users = append(c.Users, config.User{Name: pairs[i], Password: pairs[i+1]})
		}
	}
}

func chain(mods ...func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		for _, m := range mods {
			if m != nil {
				m(c)
			}
		}
	}
}

// regPhone is a browser stand-in that registers over WebSocket and answers
// calls with a pion PeerConnection that echoes what it receives.
type regPhone struct {
	t        *testing.T
	r        *Relay
	user     string
	device   string
	authUser string // digest username when not user (token credentials)
	ua       *sipgo.UserAgent
	cli      *sipgo.Client
	dua      *sipgo.DialogUA

	mu      sync.Mutex
	code    int           // answer with this final code instead of 200 (0 = answer)
	delay   time.Duration // ring this long before answering
	never   bool          // ring until cancelled
	codecs  []string
	invites []*sip.Request
	cancels []*sip.Request
	reinv   []*sip.Request
	dialogs []*sipgo.DialogServerSession
	pcs     []*webrtc.PeerConnection
	rxCount int
	conn    chan struct{}
	byes    chan struct{}
	ringing chan struct{}
	pauseEc bool
	reDelay time.Duration // answer re-INVITEs this late
	notifys []string
	lastSeq uint16 // of the last packet echoed: SRTP's replay window wants sends to go on from it
	track   *webrtc.TrackLocalStaticRTP
	rx      chan *rtp.Packet
}

func newRegPhone(t *testing.T, r *Relay, user, device string, codecs ...string) *regPhone {
	t.Helper()
	if len(codecs) == 0 {
		codecs = []string{"PCMU"}
	}
	p := &regPhone{t: t, r: r, user: user, device: device, codecs: codecs,
		conn: make(chan struct{}, 4), byes: make(chan struct{}, 4), ringing: make(chan struct{}, 4), rx: make(chan *rtp.Packet, 1000)}
	p.ua, _ = sipgo.NewUA(sipgo.WithUserAgent("regphone"), sipgo.WithUserAgentHostname(device+".invalid"))
	srv, _ := sipgo.NewServer(p.ua)
	p.cli, _ = sipgo.NewClient(p.ua)
	p.dua = &sipgo.DialogUA{Client: p.cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: user, Host: device + ".invalid", UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}}}}
	srv.OnInvite(p.onInvite)
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if d := p.dialog(req); d != nil {
			_ = d.ReadAck(req, tx)
		}
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if d := p.dialog(req); d != nil {
			_ = d.ReadBye(req, tx)
		} else {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No dialog", nil))
		}
		p.byes <- struct{}{}
	})
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		p.notifys = append(p.notifys, strings.TrimSpace(string(req.Body())))
		p.mu.Unlock()
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		p.cancels = append(p.cancels, req)
		p.mu.Unlock()
	})
	t.Cleanup(func() {
		p.mu.Lock()
		for _, pc := range p.pcs {
			_ = pc.Close()
		}
		p.mu.Unlock()
		p.ua.Close()
	})
	return p
}

func (p *regPhone) relayURI() sip.Uri {
	host, port := splitHostPort(p.r.HTTPAddr().String())
	return sip.Uri{Host: host, Port: port, UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}}
}

// registerReq builds a REGISTER for the phone's user with expiry exp.
func (p *regPhone) registerReq(exp int) *sip.Request {
	uri := p.relayURI()
	req := sip.NewRequest(sip.REGISTER, uri)
	aor := sip.Uri{User: p.user, Host: uri.Host}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(sip.HeaderClone(&p.dua.ContactHDR))
	req.AppendHeader(sip.NewHeader("Expires", fmt.Sprint(exp)))
	req.SetTransport("WS")
	return req
}

// register sends REGISTER and answers the challenge with password; it
// returns the final response. md5Only answers the MD5 challenge.
func (p *regPhone) register(password string, exp int, md5Only bool) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := p.registerReq(exp)
	res, err := p.cli.Do(ctx, req)
	if err != nil {
		p.t.Fatalf("register: %v", err)
	}
	if res.StatusCode != 401 {
		return res
	}
	if md5Only {
		var md5Chal string
		for _, h := range res.GetHeaders("WWW-Authenticate") {
			if strings.Contains(h.Value(), "algorithm=MD5") {
				md5Chal = h.Value()
			}
		}
		res.RemoveHeader("WWW-Authenticate")
		res.AppendHeader(sip.NewHeader("WWW-Authenticate", md5Chal))
	} else if !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "SHA-256") {
		p.t.Fatalf("first challenge is not SHA-256: %s", res.GetHeader("WWW-Authenticate").Value())
	}
	res, err = p.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: firstNonEmpty(p.authUser, p.user), Password: password})
	if err != nil {
		p.t.Fatalf("register with credentials: %v", err)
	}
	return res
}

func (p *regPhone) mustRegister(password string) {
	p.t.Helper()
	if res := p.register(password, 300, false); res.StatusCode != 200 {
		p.t.Fatalf("register: %d %s", res.StatusCode, res.Reason)
	}
}

func (p *regPhone) dialog(req *sip.Request) *sipgo.DialogServerSession {
	id, err := sip.DialogIDFromRequestUAS(req)
	if err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.dialogs {
		if d.ID == id {
			return d
		}
	}
	return nil
}

func (p *regPhone) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if _, ok := to.Params.Get("tag"); ok {
			p.onReInvite(req, tx)
			return
		}
	}
	tx.OnCancel(func(c *sip.Request) {
		p.mu.Lock()
		p.cancels = append(p.cancels, c)
		p.mu.Unlock()
	})
	p.mu.Lock()
	p.invites = append(p.invites, req)
	code, delay, never := p.code, p.delay, p.never
	p.mu.Unlock()
	d, err := p.dua.ReadInvite(req, tx)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.dialogs = append(p.dialogs, d)
	p.mu.Unlock()
	_ = d.Respond(180, "Ringing", nil)
	p.ringing <- struct{}{}
	if never {
		<-d.Context().Done()
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-d.Context().Done():
			return
		}
	}
	if code != 0 && code != 200 {
		_ = d.Respond(code, "No", nil)
		return
	}
	answer, err := p.answer(string(req.Body()))
	if err != nil {
		p.t.Errorf("phone %s: %v", p.device, err)
		_ = d.Respond(488, "Bad offer", nil)
		return
	}
	_ = d.RespondSDP([]byte(answer))
}

// onReInvite answers in-dialog offers with the answer direction; the
// PeerConnection is left as it is (the relay keeps ICE and DTLS).
func (p *regPhone) onReInvite(req *sip.Request, tx sip.ServerTransaction) {
	p.mu.Lock()
	p.reinv = append(p.reinv, req)
	pc := p.pcs[len(p.pcs)-1]
	delay := p.reDelay
	p.mu.Unlock()
	time.Sleep(delay)
	dir := "sendrecv"
	for _, d := range []string{"sendonly", "recvonly", "inactive"} {
		if strings.Contains(string(req.Body()), "a="+d) {
			dir = d
		}
	}
	body := sdp.Rewrite(pc.LocalDescription().SDP, sdp.AnswerDirection(dir), sdp.Version(pc.LocalDescription().SDP)+uint64(len(p.reinv)), "")
	res := sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.AppendHeader(sip.HeaderClone(&p.dua.ContactHDR))
	_ = tx.Respond(res)
}

// answer makes a pion answer that echoes every packet back.
func (p *regPhone) answer(offer string) (string, error) {
	var m webrtc.MediaEngine
	for _, c := range p.codecs {
		if err := m.RegisterCodec(phoneCodecs[c], webrtc.RTPCodecTypeAudio); err != nil {
			return "", err
		}
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: 8000, SDPFmtpLine: "0-16"}, PayloadType: 101},
		webrtc.RTPCodecTypeAudio); err != nil {
		return "", err
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(&m), webrtc.WithSettingEngine(s))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	p.pcs = append(p.pcs, pc)
	p.mu.Unlock()
	track, err := webrtc.NewTrackLocalStaticRTP(phoneCodecs[p.codecs[0]].RTPCodecCapability, "audio", "phone")
	if err != nil {
		return "", err
	}
	if _, err := pc.AddTrack(track); err != nil {
		return "", err
	}
	p.mu.Lock()
	p.track = track
	p.mu.Unlock()
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.rxCount++
			pause := p.pauseEc
			p.mu.Unlock()
			if !pause {
				p.mu.Lock()
				p.lastSeq = pkt.SequenceNumber
				p.mu.Unlock()
				_ = track.WriteRTP(pkt)
			} else {
				select {
				case p.rx <- pkt:
				default:
				}
			}
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			p.conn <- struct{}{}
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", err
	}
	<-g
	return pc.LocalDescription().SDP, nil
}

func (p *regPhone) set(f func(p *regPhone)) {
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
}

func TestRegisterSHA256AndMD5(t *testing.T) {
	r := startRelay(t, withUsers("alice", "wonderland"))
	p := newRegPhone(t, r, "alice", "laptop")
	res := p.register("wonderland", 300, false)
	if res.StatusCode != 200 {
		t.Fatalf("SHA-256 register: %d %s", res.StatusCode, res.Reason)
	}
	if c := res.GetHeader("Contact"); c == nil || !strings.Contains(c.Value(), "expires=") {
		t.Fatalf("200 lists no binding: %v", res)
	}
	if n := r.Registered("alice"); n != 1 {
		t.Fatalf("%d bindings, want 1", n)
	}
	// A second device (MD5 this time): both stay registered.
	p2 := newRegPhone(t, r, "alice", "desk")
	if res := p2.register("wonderland", 300, true); res.StatusCode != 200 {
		t.Fatalf("MD5 register: %d %s", res.StatusCode, res.Reason)
	}
	if n := r.Registered("alice"); n != 2 {
		t.Fatalf("%d bindings, want 2", n)
	}
	// Refresh keeps one binding per device.
	if res := p.register("wonderland", 600, false); res.StatusCode != 200 {
		t.Fatalf("refresh: %d", res.StatusCode)
	}
	if n := r.Registered("alice"); n != 2 {
		t.Fatalf("after refresh %d bindings, want 2", n)
	}
	// Unregister one device with Expires: 0.
	if res := p2.register("wonderland", 0, false); res.StatusCode != 200 {
		t.Fatalf("unregister: %d", res.StatusCode)
	}
	if n := r.Registered("alice"); n != 1 {
		t.Fatalf("after unregister %d bindings, want 1", n)
	}
	// Too brief an expiry.
	if res := p2.register("wonderland", 5, false); res.StatusCode != 423 {
		t.Fatalf("Expires 5 got %d, want 423", res.StatusCode)
	}
	// The registration ends when the WebSocket closes.
	p.ua.Close()
	waitFor(t, "unregister on websocket close", 5*time.Second, func() bool { return r.Registered("alice") == 0 })
}

func TestRegisterHashedUsersFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	ha1 := md5.Sum([]byte("bob:mediarelay:builder"))
	if err := os.WriteFile(path, []byte("# users\nbob:mediarelay:"+hex.EncodeToString(ha1[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, func(c *config.Config) { c.SIP.UsersFile = path })
	p := newRegPhone(t, r, "bob", "laptop")
	// Only an MD5 hash is stored: bob is challenged with MD5 alone, so a
	// client that prefers SHA-256 (or takes the first challenge) still
	// gets in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := p.registerReq(300)
	res, err := p.cli.Do(ctx, req)
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("first REGISTER: %v %v", res, err)
	}
	chals := res.GetHeaders("WWW-Authenticate")
	if len(chals) != 1 || !strings.Contains(chals[0].Value(), "algorithm=MD5") {
		t.Fatalf("bob has only an MD5 hash but was challenged with %v", chals)
	}
	res, err = p.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "bob", Password: "builder"})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("register answering the offered challenge: %v %v", res, err)
	}
	// An unknown user is offered both, as anyone is: the challenge does not
	// say who exists.
	q := newRegPhone(t, r, "mallory", "laptop")
	res, err = q.cli.Do(ctx, q.registerReq(300))
	if err != nil || res.StatusCode != 401 || len(res.GetHeaders("WWW-Authenticate")) != 2 {
		t.Fatalf("unknown user's challenge: %v %v", res, err)
	}
}

func TestRegisterWrongPasswordLocksOut(t *testing.T) {
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.SIP.AuthFailures = 3
		c.SIP.AuthLockout = time.Minute
	}))
	p := newRegPhone(t, r, "alice", "laptop")
	var codes []int
	for i := 0; i < 4; i++ {
		codes = append(codes, int(p.register("guess", 300, false).StatusCode))
	}
	// Wrong answers are challenged again (401) until the third, then 403.
	want := []int{401, 401, 403, 403}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	// Locked out: even the right password gets 403 now.
	if res := p.register("wonderland", 300, false); res.StatusCode != 403 {
		t.Fatalf("right password while locked out: %d, want 403", res.StatusCode)
	}
	if n := r.Registered("alice"); n != 0 {
		t.Fatalf("%d bindings after failed logins", n)
	}

}

func TestRegisterFloodThrottled(t *testing.T) {
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.SIP.RegisterRate = 5
		c.SIP.RegisterBurst = 10
		c.SIP.OverloadReplyRate = 1000 // every throttled REGISTER answered (ratelimit_test.go drops)
	}))
	p := newRegPhone(t, r, "alice", "laptop")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	counts := map[int]int{}
	for i := 0; i < 40; i++ {
		res, err := p.cli.Do(ctx, p.registerReq(300))
		if err != nil {
			t.Fatal(err)
		}
		counts[int(res.StatusCode)]++
		if res.StatusCode == 503 && res.GetHeader("Retry-After") == nil {
			t.Fatal("503 without Retry-After")
		}
	}
	if counts[503] < 20 || counts[401] < 10 {
		t.Fatalf("flood of 40 REGISTERs: %v; want about 10 challenged and the rest throttled", counts)
	}
}

func TestRegisterOnlyOverWebSocket(t *testing.T) {
	r := startRelay(t, withUsers("alice", "wonderland"))
	ua, _ := sipgo.NewUA()
	defer ua.Close()
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	host, port := splitHostPort(r.SIPUDPAddr().String())
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: host, Port: port})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{User: "alice", Host: host}})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{User: "alice", Host: "127.0.0.1", Port: 5999}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 403 {
		t.Fatalf("REGISTER over UDP got %d, want 403", res.StatusCode)
	}
}

// sendCheck stops echoing, sends n frames and counts those that come back
// unchanged (the far end echoes).
func (p *regPhone) sendCheck(n int) int {
	p.mu.Lock()
	p.pauseEc = true
	track := p.track
	seq := p.lastSeq + 1
	p.mu.Unlock()
	for len(p.rx) > 0 {
		<-p.rx
	}
	sent := map[string]bool{}
	for i := 0; i < n; i++ {
		payload := make([]byte, 160)
		copy(payload, fmt.Sprintf("browser-%d-%04d", seq, i))
		sent[string(payload)] = true
		_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq + uint16(i), Timestamp: uint32(i * 160)}, Payload: payload})
		p.mu.Lock()
		p.lastSeq = seq + uint16(i)
		p.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	matched := 0
	for {
		select {
		case pkt := <-p.rx:
			if sent[string(pkt.Payload)] {
				matched++
			}
		case <-time.After(time.Second):
			return matched
		}
	}
}

// TestRegisterDigestAlgorithmsRestricted: with sip.digest_algorithms
// [SHA-256] only that challenge is offered, and an MD5 answer is not taken.
func TestRegisterDigestAlgorithmsRestricted(t *testing.T) {
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) { c.SIP.DigestAlgorithms = []string{"SHA-256"} }))
	p := newRegPhone(t, r, "alice", "laptop")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := p.registerReq(300)
	res, err := p.cli.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	chals := res.GetHeaders("WWW-Authenticate")
	if res.StatusCode != 401 || len(chals) != 1 || !strings.Contains(chals[0].Value(), "algorithm=SHA-256") {
		t.Fatalf("challenge %d %v", res.StatusCode, chals)
	}
	// Answer as if MD5 had been offered with the same nonce.
	md5 := strings.Replace(chals[0].Value(), "algorithm=SHA-256", "algorithm=MD5", 1)
	res.RemoveHeader("WWW-Authenticate")
	res.AppendHeader(sip.NewHeader("WWW-Authenticate", md5))
	res, err = p.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "alice", Password: "wonderland"})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 401 || r.Registered("alice") != 0 {
		t.Fatalf("MD5 answer to a SHA-256-only registrar: %d", res.StatusCode)
	}
	if res := p.register("wonderland", 300, false); res.StatusCode != 200 {
		t.Fatalf("SHA-256 register: %d", res.StatusCode)
	}
}
