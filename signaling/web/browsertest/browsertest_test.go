package browsertest_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/signaling/web"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestEchoCall proves the softphone page, its SIP UA and the harness end to
// end, without the relay: the page calls a sipgo UAS over WebSocket whose
// pion peer echoes the browser's RTP back, and the tones of the fake
// microphone must come back into the page; the page's BYE must reach the UAS.
func TestEchoCall(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	// No overall deadline of our own: each browser run bounds itself, and a
	// loaded machine can make Chromium's start alone take many seconds.
	ctx := t.Context()

	tones := []float64{400, 1000}
	const quiet = 2500.0 // a frequency nobody sends: the noise floor for comparison
	wav := filepath.Join(t.TempDir(), "tones.wav")
	if err := browsertest.WriteToneWAV(wav, tones, 1); err != nil {
		t.Fatal(err)
	}

	uas := startEchoUAS(t)
	page := httptest.NewServer(web.Handler())
	defer page.Close()
	pageURL := page.URL + "/?ws=" + url.QueryEscape(uas.wsURL)
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := browser.Close(); err != nil {
			t.Error(err)
		}
	}()

	t.Run("busy", func(t *testing.T) {
		// The one-shot Call (its own browser, Chromium's beeps as microphone).
		res, err := browsertest.Call(ctx, browsertest.Options{PageURL: pageURL, Target: "sip:busy@127.0.0.1"})
		if err == nil {
			t.Fatal("a call to a busy UAS succeeded")
		}
		if res.Established || res.Code != 486 || res.Reason != "Busy Here" {
			for _, l := range res.Log {
				t.Log(l)
			}
			t.Fatalf("got established=%v %d %q, want the 486 Busy Here", res.Established, res.Code, res.Reason)
		}
		call := uas.lastCall()
		if call == nil {
			t.Fatal("the UAS saw no INVITE")
		}
		select {
		case <-call.rejectACKed:
		case <-time.After(3 * time.Second):
			t.Error("the page did not ACK the 486")
		}
	})

	t.Run("cancel", func(t *testing.T) {
		res, err := browser.Call(ctx, browsertest.Options{PageURL: pageURL, Target: "sip:ring@127.0.0.1", CancelWhenRinging: true})
		if err != nil {
			for _, l := range res.Log {
				t.Log(l)
			}
			t.Fatal(err)
		}
		if res.Established || res.Code != 487 || !res.HungUp {
			t.Errorf("got established=%v %d %q hungUp=%v, want a 487 after the CANCEL", res.Established, res.Code, res.Reason, res.HungUp)
		}
		call := uas.lastCall()
		if call == nil {
			t.Fatal("the UAS saw no INVITE")
		}
		select {
		case <-call.canceled:
		case <-time.After(3 * time.Second):
			t.Error("the UAS did not see the call cancelled")
		}
	})

	t.Run("incoming", func(t *testing.T) {
		call := &echoCall{bye: make(chan struct{})}
		uacCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		uacErr := make(chan error, 1)
		go func() { uacErr <- uas.callBrowser(uacCtx, call) }()

		res, err := browser.Call(ctx, browsertest.Options{
			PageURL:  pageURL,
			Answer:   true,
			User:     regUser,
			Password: regPassword,
			Hold:     3 * time.Second,
			Freqs:    append(tones, quiet),
			DTMF:     "1#",
		})
		for _, l := range res.Log {
			t.Log(l)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("tone levels (dB over noise floor): %v; stats: %v", res.ToneDB, res.Stats)
		checkTones(t, res, tones, quiet)
		if !res.HungUp {
			t.Error("the page's hang-up was not acknowledged")
		}
		if err := <-uacErr; err != nil {
			t.Errorf("calling the browser: %v", err)
		}
		if got := call.dtmfDigits(); got != "1#" {
			t.Errorf("received DTMF %q, want %q", got, "1#")
		}
	})

	for _, c := range []struct{ mode, codec string }{{"echo", "opus"}, {"echo", "pcmu"}, {"early", "pcmu"}} {
		codec := c.codec
		t.Run(c.mode+"-"+codec, func(t *testing.T) {
			res, err := browser.Call(ctx, browsertest.Options{
				PageURL: pageURL,
				Target:  "sip:" + c.mode + "-" + codec + "@127.0.0.1",
				Hold:    3 * time.Second,
				Freqs:   append(tones, quiet),
				DTMF:    "1#",
			})
			for _, l := range res.Log {
				t.Log(l)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("tone levels (dB over noise floor): %v; stats: %v", res.ToneDB, res.Stats)

			if got := fmt.Sprint(res.Stats["codecIn"]); !strings.EqualFold(got, "audio/"+codec) {
				t.Errorf("received codec %s, want audio/%s", got, codec)
			}
			checkTones(t, res, tones, quiet)
			if !res.HungUp {
				t.Error("the page's hang-up was not acknowledged")
			}

			call := uas.lastCall()
			if call == nil {
				t.Fatal("the UAS saw no INVITE")
			}
			select {
			case <-call.bye:
			case <-time.After(3 * time.Second):
				t.Error("BYE from the page did not reach the UAS")
			}
			if got := call.dtmfDigits(); got != "1#" {
				t.Errorf("UAS received DTMF %q, want %q", got, "1#")
			}
		})
	}
}

// checkTones asserts that every tone came back well above the noise floor
// and well above a frequency nobody sent.
func checkTones(t *testing.T, res browsertest.Result, tones []float64, quiet float64) {
	t.Helper()
	floor, ok := res.ToneDB[quiet]
	if !ok {
		t.Fatalf("no level measured at %v Hz", quiet)
	}
	for _, f := range tones {
		db, ok := res.ToneDB[f]
		switch {
		case !ok:
			t.Errorf("%v Hz: nothing measured", f)
		case db < 20 || db < floor+15:
			t.Errorf("%v Hz came back at %.1f dB (the quiet %v Hz at %.1f dB): tone not detected", f, db, quiet, floor)
		}
	}
}

// echoUAS is a SIP-over-WebSocket UAS whose calls echo RTP back to the
// caller. It is also a registrar (digest-authenticated) and can call a
// registered browser.
type echoUAS struct {
	wsURL   string
	client  *sipgo.Client
	contact sip.ContactHeader

	registered chan registration // each successful REGISTER with expires > 0

	mu      sync.Mutex
	calls   []*echoCall
	uacDlgs map[string]*sipgo.DialogClientSession // calls we placed, by Call-ID
}

// registration is where a registered browser can be reached.
type registration struct {
	contact sip.Uri
	source  string // the WebSocket connection's remote address
}

// Credentials the registrar accepts.
const (
	regUser     = "alice"
	regPassword = "s3cret"
	regRealm    = "browsertest"
)

// echoCall is what the UAS saw of one call.
type echoCall struct {
	bye         chan struct{} // closed when the caller's BYE arrived
	rejectACKed chan struct{} // closed when the ACK for our 486 arrived
	canceled    chan struct{} // closed when the caller's CANCEL ended the ringing

	mu     sync.Mutex
	events []byte // RFC 4733 event codes, one per event (end packets deduplicated)
}

func (c *echoCall) dtmfDigits() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	const digits = "0123456789*#ABCD"
	var b strings.Builder
	for _, e := range c.events {
		if int(e) < len(digits) {
			b.WriteByte(digits[e])
		}
	}
	return b.String()
}

func (u *echoUAS) lastCall() *echoCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.calls) == 0 {
		return nil
	}
	return u.calls[len(u.calls)-1]
}

// startEchoUAS serves SIP over WebSocket on its own loopback port (sipgo's
// WS upgrade ignores the path, so it cannot share the page's HTTP server).
// The INVITE's user picks the codec: echo-opus or echo-pcmu.
func startEchoUAS(t *testing.T) *echoUAS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("browsertest-echo"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua)
	if err != nil {
		t.Fatal(err)
	}
	uriParams := sip.NewParams()
	uriParams.Add("transport", "ws")
	contact := sip.ContactHeader{Address: sip.Uri{
		Scheme: "sip", User: "echo", Host: "127.0.0.1", Port: port, UriParams: uriParams,
	}}
	dialogs := sipgo.NewDialogServerCache(client, contact)
	u := &echoUAS{
		wsURL:      fmt.Sprintf("ws://127.0.0.1:%d/ws", port),
		client:     client,
		contact:    contact,
		registered: make(chan registration, 4),
		uacDlgs:    map[string]*sipgo.DialogClientSession{},
	}
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) { u.register(t, req, tx) })

	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		dlg, err := dialogs.ReadInvite(req, tx)
		if err != nil {
			t.Logf("UAS: bad INVITE: %v", err)
			_ = tx.Respond(sip.NewResponseFromRequest(req, 400, "Bad Request", nil))
			return
		}
		defer dlg.Close()
		call := &echoCall{bye: make(chan struct{}), rejectACKed: make(chan struct{}), canceled: make(chan struct{})}
		u.mu.Lock()
		u.calls = append(u.calls, call)
		u.mu.Unlock()

		if req.Recipient.User == "busy" {
			// A final non-2xx: the page must ACK it (RFC 3261 §17.1.1.3).
			if err := tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil)); err != nil {
				t.Logf("UAS: 486: %v", err)
				return
			}
			select {
			case <-tx.Acks():
				close(call.rejectACKed)
			case <-time.After(5 * time.Second):
			}
			return
		}
		if req.Recipient.User == "ring" {
			// Ring until the caller gives up; sipgo answers the CANCEL with
			// 200 and the INVITE with 487 by itself.
			if err := dlg.Respond(180, "Ringing", nil); err != nil {
				t.Logf("UAS: 180: %v", err)
				return
			}
			select {
			case <-dlg.Context().Done():
				if errors.Is(tx.Err(), sip.ErrTransactionCanceled) || errors.Is(context.Cause(dlg.Context()), sip.ErrTransactionCanceled) {
					close(call.canceled)
				}
			case <-time.After(20 * time.Second):
			}
			return
		}
		// Exercise the page's provisional-response handling before answering.
		if err := dlg.Respond(180, "Ringing", nil); err != nil {
			t.Logf("UAS: 180: %v", err)
			return
		}
		// echo-CODEC answers with a 200; early-CODEC first sends the answer
		// in a 183 (early media, a "pranswer" in the page), then the 200.
		mode, codec, _ := strings.Cut(req.Recipient.User, "-")
		pc, answer, err := answerEcho(codec, string(req.Body()), call)
		if err != nil {
			t.Logf("UAS: %v", err)
			_ = dlg.Respond(488, "Not Acceptable Here", nil)
			return
		}
		defer pc.Close()
		if mode == "early" {
			if err := dlg.Respond(183, "Session Progress", []byte(answer), sip.NewHeader("Content-Type", "application/sdp")); err != nil {
				t.Logf("UAS: 183: %v", err)
				return
			}
			time.Sleep(500 * time.Millisecond) // let early media start before the answer
		}
		// RespondSDP returns once the ACK arrives (it retransmits the 200 until then).
		if err := dlg.RespondSDP([]byte(answer)); err != nil {
			t.Logf("UAS: 200: %v", err)
			return
		}
		// Keep the peer echoing until the dialog ends (BYE) or the test does.
		<-dlg.Context().Done()
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := dialogs.ReadAck(req, tx); err != nil {
			t.Logf("UAS: ACK: %v", err)
		}
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		u.mu.Lock()
		uac := u.uacDlgs[req.CallID().Value()]
		u.mu.Unlock()
		if uac != nil { // a call we placed to the browser
			if err := uac.ReadBye(req, tx); err != nil {
				t.Logf("UAC: BYE: %v", err)
			}
			return
		}
		if err := dialogs.ReadBye(req, tx); err != nil {
			t.Logf("UAS: BYE: %v", err)
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
			return
		}
		if c := u.lastCall(); c != nil {
			close(c.bye)
		}
	})

	go func() {
		if err := srv.ServeWS(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("UAS: ServeWS: %v", err)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		ua.Close()
	})
	return u
}

// register is a one-user registrar with digest authentication (RFC 2617,
// qop=auth), which the page must answer.
func (u *echoUAS) register(t *testing.T, req *sip.Request, tx sip.ServerTransaction) {
	respond := func(code int, reason string, hdrs ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		for _, h := range hdrs {
			res.AppendHeader(h)
		}
		if err := tx.Respond(res); err != nil {
			t.Logf("registrar: %v", err)
		}
	}
	auth := req.GetHeader("Authorization")
	if auth == nil {
		respond(401, "Unauthorized", sip.NewHeader("WWW-Authenticate",
			`Digest realm="`+regRealm+`", nonce="`+fmt.Sprint(time.Now().UnixNano())+`", qop="auth", algorithm=MD5`))
		return
	}
	p := map[string]string{}
	for _, m := range regexp.MustCompile(`(\w+)=(?:"([^"]*)"|([^,\s]+))`).FindAllStringSubmatch(auth.Value(), -1) {
		p[m[1]] = m[2] + m[3]
	}
	md5hex := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	ha1 := md5hex(p["username"] + ":" + regRealm + ":" + regPassword)
	ha2 := md5hex("REGISTER:" + p["uri"])
	want := md5hex(strings.Join([]string{ha1, p["nonce"], p["nc"], p["cnonce"], p["qop"], ha2}, ":"))
	if p["username"] != regUser || p["qop"] != "auth" || p["response"] != want {
		t.Logf("registrar: bad credentials %q", auth.Value())
		respond(403, "Forbidden")
		return
	}
	contact := req.Contact()
	if contact == nil {
		respond(400, "Missing Contact")
		return
	}
	expires := "600"
	if h := req.GetHeader("Expires"); h != nil {
		expires = h.Value()
	}
	respond(200, "OK", sip.NewHeader("Contact", contact.Value()), sip.NewHeader("Expires", expires))
	if expires != "0" {
		u.registered <- registration{contact: contact.Address, source: req.Source()}
	}
}

// callBrowser waits for the browser to register, then calls it with an
// echo peer's offer; it returns once the browser hangs up.
func (u *echoUAS) callBrowser(ctx context.Context, call *echoCall) error {
	var reg registration
	select {
	case reg = <-u.registered:
	case <-ctx.Done():
		return fmt.Errorf("no registration: %w", ctx.Err())
	}
	pc, err := newEchoPeer("opus", call)
	if err != nil {
		return err
	}
	defer pc.Close()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	sdp, err := setLocalAndGather(pc, offer)
	if err != nil {
		return err
	}

	// The browser's Contact is a .invalid host: reach it over the WebSocket
	// connection it registered on (RewriteContact does the same for the ACK
	// and in-dialog requests).
	req := sip.NewRequest(sip.INVITE, reg.contact)
	req.SetTransport("WS")
	req.SetDestination(reg.source)
	req.SetBody([]byte(sdp))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	dua := &sipgo.DialogUA{Client: u.client, ContactHDR: u.contact, RewriteContact: true}
	dlg, err := dua.WriteInvite(ctx, req)
	if err != nil {
		return fmt.Errorf("INVITE: %w", err)
	}
	defer dlg.Close()
	u.mu.Lock()
	u.uacDlgs[req.CallID().Value()] = dlg
	u.mu.Unlock()
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		return fmt.Errorf("waiting for the answer: %w", err)
	}
	answer := webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(dlg.InviteResponse.Body())}
	if err := pc.SetRemoteDescription(answer); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	if err := dlg.Ack(ctx); err != nil {
		return fmt.Errorf("ACK: %w", err)
	}
	select {
	case <-dlg.Context().Done(): // the browser's BYE
		close(call.bye)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no BYE from the browser: %w", ctx.Err())
	}
}

// answerEcho answers the browser's offer with a new echo peer.
func answerEcho(codec, offer string, call *echoCall) (*webrtc.PeerConnection, string, error) {
	pc, err := newEchoPeer(codec, call)
	if err != nil {
		return nil, "", err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		pc.Close()
		return nil, "", fmt.Errorf("offer: %w", err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		pc.Close()
		return nil, "", err
	}
	sdp, err := setLocalAndGather(pc, answer)
	if err != nil {
		pc.Close()
		return nil, "", err
	}
	return pc, sdp, nil
}

// setLocalAndGather applies our description and returns it with every ICE
// candidate in it, as SIP has no trickle here.
func setLocalAndGather(pc *webrtc.PeerConnection, desc webrtc.SessionDescription) (string, error) {
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return "", err
	}
	<-gathered
	return pc.LocalDescription().SDP, nil
}

// newEchoPeer returns a pion peer that sends every audio packet it receives
// back on its own track, and records RFC 4733 events instead of echoing them.
func newEchoPeer(codec string, call *echoCall) (*webrtc.PeerConnection, error) {
	var audio webrtc.RTPCodecCapability
	switch codec {
	case "opus":
		audio = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
	case "pcmu":
		audio = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1}
	default:
		return nil, fmt.Errorf("unknown codec %q", codec)
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: audio, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	event := webrtc.RTPCodecCapability{MimeType: "audio/telephone-event", ClockRate: audio.ClockRate, SDPFmtpLine: "0-16"}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: event, PayloadType: 101}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	// Only lo exists in the test's namespace, and pion skips it by default.
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))

	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*webrtc.PeerConnection, error) {
		pc.Close()
		return nil, err
	}
	track, err := webrtc.NewTrackLocalStaticRTP(audio, "audio", "echo")
	if err != nil {
		return fail(err)
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return fail(err)
	}
	go func() { // RTCP must be read for the sender's interceptors to run
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	pc.OnTrack(func(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		var audioPT, eventPT webrtc.PayloadType = 255, 255
		for _, c := range recv.GetParameters().Codecs {
			if strings.EqualFold(c.MimeType, event.MimeType) {
				eventPT = c.PayloadType
			} else if strings.EqualFold(c.MimeType, audio.MimeType) {
				audioPT = c.PayloadType
			}
		}
		var lastEventTS uint32
		var seq uint16
		for {
			pkt, _, err := remote.ReadRTP()
			if err != nil {
				return
			}
			switch webrtc.PayloadType(pkt.PayloadType) {
			case audioPT:
				// Renumber, so the events we keep to ourselves leave no gap
				// that the browser would count as loss.
				pkt.SequenceNumber = seq
				seq++
				_ = track.WriteRTP(pkt)
			case eventPT:
				// An event is sent as several packets sharing a timestamp; the
				// end bit (0x80 in byte 1) marks the last, repeated 3 times.
				if len(pkt.Payload) >= 4 && pkt.Payload[1]&0x80 != 0 && pkt.Timestamp != lastEventTS {
					lastEventTS = pkt.Timestamp
					call.mu.Lock()
					call.events = append(call.events, pkt.Payload[0])
					call.mu.Unlock()
				}
			}
		}
	})

	return pc, nil
}
