package signaling

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

func withTrunk(u *trunkUAS, mode string, codecs ...string) func(*config.Config) {
	return func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Match: ".*", Address: "sip:" + u.addr, Transport: "udp", Codecs: codecs, MediaMode: mode}}
	}
}

// echoCall places a call through a trunk that echoes, sends frames and
// checks they come back byte for byte.
func echoCall(t *testing.T, phoneCodec string, trunkCodecs ...string) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, trunkCodecs...))
	p := newPhone(t, phoneCodec)
	p.call(r, "1000")
	callID := activeCallID(t, r)

	matched := expectEcho(t, p, 100)
	// The packet counters move while the call is up, not only at its end.
	live := metricsText(t, r)
	for _, leg := range []string{`leg="webrtc",dir="in"`, `leg="sip",dir="in"`, `leg="sip",dir="out"`, `leg="webrtc",dir="out"`} {
		if v := metricValue(live, "mediarelay_packets_total", leg); v < float64(matched) {
			t.Errorf("mid-call mediarelay_packets_total{%s} = %v, want at least the %d frames that went through", leg, v, matched)
		}
	}

	p.hangup()
	select {
	case <-u.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("trunk never got the BYE")
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	rec := callRecord(t, r, callID)
	if n, _ := r.CDR().Count(context.Background()); n != 1 {
		t.Fatalf("%d CDR rows for one call", n)
	}
	if rec.EndCause != cdr.CauseNormalBrowser || rec.SIPCode != 200 || rec.Trunk != "carrier" || rec.To != "1000" ||
		rec.Mode != mediaplan.ModePassthrough || !strings.EqualFold(rec.SIPCodec, phoneCodec) || !strings.EqualFold(rec.WebRTCCodec, phoneCodec) ||
		rec.Answer.IsZero() || rec.End.Before(rec.Answer) || rec.WebRTCPacketsIn < 90 || rec.SIPPacketsIn < 90 ||
		rec.BrowserCallID == "" || rec.TrunkCallID == "" || rec.BrowserCallID == rec.TrunkCallID || rec.MOS < 4 {
		t.Fatalf("CDR: %+v", rec)
	}
	// And the call's end adds only what came after the last scrape.
	final := metricsText(t, r)
	if v := metricValue(final, "mediarelay_packets_total", `leg="webrtc",dir="in"`); v != float64(rec.WebRTCPacketsIn) {
		t.Errorf("after the call mediarelay_packets_total{webrtc,in} = %v, the CDR says %d", v, rec.WebRTCPacketsIn)
	}
	if v := metricValue(final, "mediarelay_packets_total", `leg="sip",dir="in"`); v != float64(rec.SIPPacketsIn) {
		t.Errorf("after the call mediarelay_packets_total{sip,in} = %v, the CDR says %d", v, rec.SIPPacketsIn)
	}
}

// activeCallID returns the id of the relay's only call.
func activeCallID(t *testing.T, r *Relay) string {
	t.Helper()
	for _, c := range r.calls.List() {
		return c.id
	}
	t.Fatal("no active call")
	return ""
}

func TestPassthroughPCMU(t *testing.T) { echoCall(t, "PCMU", "PCMU", "PCMA") }

func TestPassthroughOpus(t *testing.T) { echoCall(t, "opus", "opus", "PCMU") }

func TestTopologyHiding(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	p.call(r, "2000")
	inv := u.lastInvite()
	raw := inv.String()
	if strings.Contains(raw, "phone.invalid") || strings.Contains(raw, "phone.invalid") {
		t.Fatalf("browser address leaked to the trunk:\n%s", raw)
	}
	if inv.CallID().Value() == p.dcs.InviteRequest.CallID().Value() {
		t.Fatal("trunk leg reuses the browser's Call-ID")
	}
	if n := len(inv.GetHeaders("Via")); n != 1 {
		t.Fatalf("trunk INVITE has %d Via headers", n)
	}
	res := p.dcs.InviteResponse.String()
	if strings.Contains(res, u.addr) || strings.Contains(res, "trunk") {
		t.Fatalf("trunk address leaked to the browser:\n%s", res)
	}
	p.hangup()
}

func TestTrunkBusy(t *testing.T) {
	u := newTrunkUAS(t)
	u.code = 486
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.invite(ctx, r, "3000", []byte(p.offer()))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 486 {
		t.Fatalf("browser got %d, want 486", res.StatusCode)
	}
	if cause, code := lastEnd(t, r, 1); cause != cdr.CauseBusy || code != 486 {
		t.Fatalf("CDR end %s/%d, want busy/486", cause, code)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestTrunkUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name, transport string
		want            int
	}{
		{"udp", "udp", 408}, // nobody answers: bounded by sip.invite_timeout
		{"tcp", "tcp", 503}, // connection refused
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, func(c *config.Config) {
				c.Trunks = []config.Trunk{{Name: "dead", Match: ".*", Address: "sip:127.0.0.1:9", Transport: tc.transport}}
				c.SIP.InviteTimeout = 2 * time.Second
			})
			p := newPhone(t, "PCMU")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := p.invite(ctx, r, "4000", []byte(p.offer()))
			if err != nil {
				t.Fatal(err)
			}
			if int(res.StatusCode) != tc.want {
				t.Fatalf("browser got %d, want %d", res.StatusCode, tc.want)
			}
			if cause, code := lastEnd(t, r, 1); cause != cdr.CauseUnreachable || code != tc.want {
				t.Fatalf("CDR end %s/%d, want trunk_unreachable/%d", cause, code, tc.want)
			}
			waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
}

func TestBrowserCancelsWhileRinging(t *testing.T) {
	u := newTrunkUAS(t)
	u.noAnswer = true
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, "ringing", 10*time.Second, func() bool { return u.lastInvite() != nil })
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	res, _ := p.invite(ctx, r, "5000", []byte(p.offer()))
	if res == nil || res.StatusCode != 487 {
		t.Fatalf("browser got %v, want 487", res)
	}
	select {
	case <-u.cancels:
	case <-time.After(5 * time.Second):
		t.Fatal("trunk never saw the CANCEL")
	}
	if cause, code := lastEnd(t, r, 1); cause != cdr.CauseCancelled || code != 487 {
		t.Fatalf("CDR end %s/%d, want cancelled/487", cause, code)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestTrunkHangsUp(t *testing.T) {
	u := newTrunkUAS(t)
	u.byeAfter = 500 * time.Millisecond
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	p.call(r, "6000")
	select {
	case <-p.byes:
	case <-time.After(10 * time.Second):
		t.Fatal("browser never got the BYE")
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestMediaTimeout(t *testing.T) {
	u := newTrunkUAS(t)
	u.echo = false // the trunk sends nothing
	r := startRelay(t, func(c *config.Config) {
		withTrunk(u, mediaplan.ModeAuto, "PCMU")(c)
		c.Media.Timeout = 2 * time.Second
	})
	p := newPhone(t, "PCMU")
	p.call(r, "7000")
	go p.sendFrames(200, 160) // the browser keeps talking
	for _, ch := range []chan struct{}{p.byes, u.byes} {
		select {
		case <-ch:
		case <-time.After(15 * time.Second):
			t.Fatal("a leg was not hung up after the media timeout")
		}
	}
	if cause, _ := lastEnd(t, r, 1); cause != cdr.CauseMediaTimeout {
		t.Fatalf("CDR end %s, want media_timeout", cause)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestNoCommonCodec(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModePassthrough, "PCMU"))
	p := newPhone(t, "G729")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.invite(ctx, r, "8000", []byte(p.offer()))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 488 {
		t.Fatalf("browser got %d, want 488", res.StatusCode)
	}
	if u.lastInvite() != nil {
		t.Fatal("the trunk was called although nothing could be relayed")
	}
}

func TestMalformedSDP(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.invite(ctx, r, "9000", []byte("v=0\r\nthis is not sdp\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 400 {
		t.Fatalf("browser got %d, want 400", res.StatusCode)
	}
}

func TestEchoEndpoint(t *testing.T) {
	r := startRelay(t, nil)
	p := newPhone(t, "opus", "PCMU")
	p.call(r, "echo")
	sent := p.sendFrames(50, 80)
	got := p.collect(time.Second)
	if len(got) < len(sent)*9/10 {
		t.Fatalf("echo returned %d of %d frames", len(got), len(sent))
	}
	for _, pkt := range got {
		if !bytes.HasPrefix(pkt.Payload, []byte("frame-")) {
			t.Fatalf("unexpected payload %q", pkt.Payload)
		}
	}
	p.hangup()
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestHTTPEndpoints(t *testing.T) {
	r := startRelay(t, nil)
	base := "http://" + r.HTTPAddr().String()
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": "mediarelay_calls_active", "/": "<html"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(strings.ToLower(string(b)), strings.ToLower(want)) {
			t.Fatalf("%s: %d %q", path, res.StatusCode, b)
		}
	}
}

// TestNoLeaks places and ends calls and checks that every port and
// goroutine of them is released.
func TestNoLeaks(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	oneCall := func() {
		p := newPhone(t, "PCMU")
		p.call(r, "1")
		p.sendFrames(10, 160)
		p.hangup()
		p.close()
	}
	// One call first so lazily started background goroutines exist.
	oneCall()
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	// Timers of finished SIP transactions linger up to 64*T1 (3.2 s with
	// TestMain's timers); let them expire before counting.
	settle := func(limit int) int {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > limit && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		return runtime.NumGoroutine()
	}
	base := settle(-1)
	for i := 0; i < 3; i++ {
		oneCall()
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	if n := settle(base); n > base {
		t.Fatalf("goroutines: %d before, %d after\n%s", base, n, goroutineSummary())
	}
}

// goroutineSummary counts live goroutines by the function they were created by.
func goroutineSummary() string {
	buf := make([]byte, 4<<20)
	stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	count := map[string]int{}
	for _, s := range stacks {
		lines := strings.Split(s, "\n")
		key := lines[len(lines)-2]
		for _, l := range lines {
			if strings.HasPrefix(l, "created by ") {
				key = l
			}
		}
		count[key]++
	}
	var b strings.Builder
	for k, n := range count {
		fmt.Fprintf(&b, "%3d %s\n", n, k)
	}
	return b.String()
}

func TestOptionsAnswered(t *testing.T) {
	r := startRelay(t, nil)
	ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	defer ua.Close()
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	host, port := splitHostPort(r.SIPUDPAddr().String())
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: host, Port: port})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.GetHeader("Allow") == nil {
		t.Fatalf("OPTIONS: %s", res.StartLine())
	}
}

// TestWarnsWithoutPublicIP: a wildcard media bind without public_ip makes
// the relay guess what to advertise; the operator is told at start.
func TestWarnsWithoutPublicIP(t *testing.T) {
	for _, tc := range []struct {
		bind, public string
		warn         bool
	}{{"0.0.0.0", "", true}, {"0.0.0.0", "127.0.0.1", false}, {"127.0.0.1", "", false}} {
		cfg := config.Default()
		cfg.HTTP.Listen, cfg.SIP.UDPListen, cfg.SIP.TCPListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.Media.BindIP, cfg.Media.PublicIP = tc.bind, tc.public
		cfg.Media.WebRTCPort = 0
		cfg.Media.PortMin, cfg.Media.PortMax = nextPortRange()
		cfg.CDR.Path = ""
		var buf safeBuffer
		r, err := New(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Serve(ctx) }()
		select {
		case <-r.Ready():
		case err := <-done:
			t.Fatalf("relay did not start: %v", err)
		}
		cancel()
		<-done
		if got := strings.Contains(buf.String(), "media.public_ip is not set"); got != tc.warn {
			t.Errorf("bind %s public %q: warned %v, want %v\n%s", tc.bind, tc.public, got, tc.warn, buf.String())
		}
	}
}

// safeBuffer is a bytes.Buffer for a logger written from several goroutines.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// expectEcho sends n frames from p and checks that at least 90 % come
// back byte for byte and nothing else does; it returns how many came back.
func expectEcho(t *testing.T, p *phone, n int) int {
	t.Helper()
	sent := p.sendFrames(n, 160)
	got := p.collect(time.Second)
	want := map[string]bool{}
	for _, s := range sent {
		want[string(s)] = true
	}
	matched := 0
	for _, pkt := range got {
		if !want[string(pkt.Payload)] {
			t.Fatalf("a packet came back that was never sent: %q", pkt.Payload[:12])
		}
		matched++
	}
	if matched < len(sent)*9/10 {
		t.Fatalf("only %d of %d frames came back", matched, len(sent))
	}
	return matched
}

// TestDefaultTrunkByName: `trunk: carrier` naming a trunk entry makes that
// entry (its address, codecs and mode) the default for calls no pattern
// matches, not a host literally called "carrier": the call reaches the
// named entry's address, and no other trunk's.
func TestDefaultTrunkByName(t *testing.T) {
	other := newTrunkUAS(t)
	u := newTrunkUAS(t)
	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "pbx", Match: "^9", Address: "sip:" + other.addr},
			{Name: "carrier", Match: "^8", Address: "sip:" + u.addr, Codecs: []string{"PCMA"}, MediaMode: mediaplan.ModePassthrough},
		}
		c.Trunk = "carrier"
	})
	p := newPhone(t, "PCMA")
	p.call(r, "1000") // matches no pattern
	callID := activeCallID(t, r)
	expectEcho(t, p, 50)
	inv := u.lastInvite()
	if inv == nil || inv.Recipient.User != "1000" || fmt.Sprintf("%s:%d", inv.Recipient.Host, inv.Recipient.Port) != u.addr {
		t.Fatalf("the named trunk at %s got INVITE %v", u.addr, inv)
	}
	if other.lastInvite() != nil {
		t.Fatal("the call also reached the other trunk")
	}
	p.hangup()
	waitChan(t, "BYE to the trunk", u.byes)
	if rec := callRecord(t, r, callID); rec.Trunk != "carrier" || !strings.EqualFold(rec.SIPCodec, "PCMA") {
		t.Fatalf("CDR trunk %q, codec %q; want carrier, PCMA", rec.Trunk, rec.SIPCodec)
	}
}

// TestDrainRefusesNewCalls: a drained relay answers new INVITEs 503 with
// Retry-After, so that browsers' apps and SIP proxies go to another node,
// while the call it already carries goes on.
func TestDrainRefusesNewCalls(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	r.Drain()
	p2 := newPhone(t, "PCMU")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p2.invite(ctx, r, "1001", []byte(p2.offer()))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("a new call to a drained relay got %d %s (Retry-After %v), want 503 with Retry-After", res.StatusCode, res.Reason, res.GetHeader("Retry-After"))
	}
	expectEcho(t, p, 50) // the call in progress is untouched
	p.hangup()
	waitChan(t, "BYE to the trunk", u.byes)
}

// TestWebLegReadDuringSetup: reading a call's browser leg while the call
// is being set up (a scrape, the call API, a test's watcher) sees no leg
// yet and must not break the call: the leg it gets later is the real one.
func TestWebLegReadDuringSetup(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, c := range r.calls.List() {
				_ = c.media.Web() // before SetWeb: nil, and nothing latched
			}
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	close(stop)
	<-done
	expectEcho(t, p, 50)
	p.hangup()
	waitChan(t, "BYE to the trunk", u.byes)
}
