package signaling

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
	"github.com/mediarelay/mediarelay/transcode"
)

// SIPp scenarios in which SIPp is the trunk calling a registered browser.
// Each INVITE offers PCMU; [service] is the called user.

const sippHead = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="%s">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Carol" <sip:+15557654321@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70%s
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true">%s</recv>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Carol" <sip:+15557654321@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
`

// sippInDialog is an in-dialog request from SIPp with CSeq n.
func sippInDialog(method string, n int, extra, sdpDir string) string {
	body := ""
	ctype := "Content-Length: 0"
	if sdpDir != "" {
		ctype = "Content-Type: application/sdp\n      Content-Length: [len]"
		body = fmt.Sprintf(`
      v=0
      o=sipp 1 %d IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=%s`, n, sdpDir)
	}
	if extra != "" {
		extra = "\n      " + extra
	}
	return fmt.Sprintf(`  <send retrans="500">
    <![CDATA[
      %s sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Carol" <sip:+15557654321@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: %d %s
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70%s
      %s
%s
    ]]>
  </send>
`, method, n, method, extra, ctype, body)
}

func sippAck(n int) string {
	return fmt.Sprintf(`  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Carol" <sip:+15557654321@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: %d ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
`, n)
}

// sippExpect is a <recv> of a 200 whose text must match re.
func sippExpect(re string) string {
	// One variable for all checks: SIPp rejects a variable used only once.
	return fmt.Sprintf(`<action><ereg regexp="%s" search_in="msg" check_it="true" assign_to="chk"/></action>`, re)
}

const sippRecvBye = `  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
`

const sippSendBye = `  <recv response="200"/>
</scenario>
`

func sippPause(ms int) string { return fmt.Sprintf("  <pause milliseconds=\"%d\"/>\n", ms) }

// runSIPp runs scenario against the relay as a trunk on 127.0.0.1:port and
// waits for it; it fails the test when SIPp reports a failed call.
func runSIPp(t *testing.T, ctx context.Context, r *Relay, port int, service, scenario string, extraArgs ...string) {
	t.Helper()
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("sipp not installed: run .ci/deps (Debian package sip-tester)")
	}
	dir := t.TempDir()
	sf := filepath.Join(dir, "scenario.xml")
	if err := os.WriteFile(sf, []byte(scenario), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-sf", sf, "-i", "127.0.0.1", "-p", fmt.Sprint(port), "-mi", "127.0.0.1",
		"-mp", fmt.Sprint(sippFreePort(t)), "-m", "1", "-s", service, "-nostdin", "-timeout", "60s",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log")}, extraArgs...)
	args = append(args, r.SIPUDPAddr().String())
	cmd := exec.CommandContext(ctx, sipp, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
		t.Fatalf("sipp: %v\n%s\n%s", err, tailStr(out.String(), 3000), errs)
	}
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// sippCarrier configures a trunk at SIPp's address.
func sippCarrier(port int) func(*config.Config) {
	return func(c *config.Config) {
		c.Trunks = append(c.Trunks, config.Trunk{Name: "sipp", Match: "^9", Address: fmt.Sprintf("sip:127.0.0.1:%d", port), Codecs: []string{"PCMU"}})
	}
}

func TestSIPpInboundCall(t *testing.T) {
	port := sippFreePort(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), sippCarrier(port)))
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	scen := fmt.Sprintf(sippHead, "inbound", "", "") + sippPause(2000) + sippInDialog("BYE", 2, "", "") + sippSendBye
	runSIPp(t, ctx, r, port, "alice", scen)
	select {
	case <-p.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("browser got no BYE")
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

func TestSIPpHoldResume(t *testing.T) {
	port := sippFreePort(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), sippCarrier(port), func(c *config.Config) { c.Media.Timeout = 2 * time.Second }))
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// SIPp sends no RTP: on hold for 3 s past the 2 s media timeout, then
	// resumed and hung up at once.
	scen := fmt.Sprintf(sippHead, "hold", "", "") +
		sippInDialog("INVITE", 2, "", "sendonly") +
		`  <recv response="100" optional="true"/>` + "\n" +
		`  <recv response="200">` + sippExpect("a=recvonly") + "</recv>\n" + sippAck(2) +
		sippPause(3000) +
		sippInDialog("INVITE", 3, "", "sendrecv") +
		`  <recv response="100" optional="true"/>` + "\n" +
		`  <recv response="200">` + sippExpect("a=sendrecv") + "</recv>\n" + sippAck(3) +
		sippInDialog("BYE", 4, "", "") + sippSendBye
	runSIPp(t, ctx, r, port, "alice", scen)
	p.mu.Lock()
	var dirs []string
	for _, req := range p.reinv {
		for _, d := range []string{"sendonly", "sendrecv", "inactive", "recvonly"} {
			if strings.Contains(string(req.Body()), "a="+d) {
				dirs = append(dirs, d)
			}
		}
	}
	p.mu.Unlock()
	if strings.Join(dirs, ",") != "sendonly,sendrecv" {
		t.Fatalf("browser was offered %v, want sendonly then sendrecv", dirs)
	}
	if c := sumCounter(t, r.m.CallsTotal, "cause", cdr.CauseMediaTimeout); c != 0 {
		t.Fatal("the media timeout fired during hold")
	}
}

func TestSIPpSessionTimerRefresh(t *testing.T) {
	port := sippFreePort(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), sippCarrier(port)))
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	se := "Session-Expires: 90;refresher=uac\n      Supported: timer"
	scen := fmt.Sprintf(sippHead, "session-timer", "\n      "+se, sippExpect("Session-Expires: 90;refresher=uac")) +
		sippPause(500) +
		// Refresh with UPDATE (no SDP), then with a re-INVITE.
		sippInDialog("UPDATE", 2, se, "") +
		`  <recv response="200">` + sippExpect("Session-Expires: 90;refresher=uac") + "</recv>\n" +
		sippInDialog("INVITE", 3, se, "sendrecv") +
		`  <recv response="100" optional="true"/>` + "\n" +
		`  <recv response="200">` + sippExpect("Session-Expires: 90;refresher=uac") + "</recv>\n" + sippAck(3) +
		sippInDialog("BYE", 4, "", "") + sippSendBye
	runSIPp(t, ctx, r, port, "alice", scen)
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
}

// writeToneULaw writes seconds of raw μ-law (what SIPp's rtp_stream plays
// as PCMU) holding the sum of freqs.
func writeToneULaw(path string, freqs []float64, seconds int) error {
	pcm := make([]int16, 8000*seconds)
	for i := range pcm {
		var v float64
		for _, f := range freqs {
			v += math.Sin(2 * math.Pi * f * float64(i) / 8000)
		}
		pcm[i] = int16(v / float64(len(freqs)) * 12000)
	}
	out := make([]byte, len(pcm))
	transcode.MulawEncode(out, pcm)
	return os.WriteFile(path, out, 0o644)
}

// TestBrowserAnswersSIPp registers the relay's own softphone page (its
// built-in SIP UA, not JsSIP) in headless Chromium, lets SIPp call it
// through the relay with 500 Hz and 1300 Hz in PCMU, and checks that the
// page answered and heard both tones.
func TestBrowserAnswersSIPp(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	browserAnswersSIPp(t, func(r *Relay) string { return "http://" + r.HTTPAddr().String() + "/" }, nil)
}

// browserAnswersSIPp runs a page (from pageURL) that registers as alice
// and answers; SIPp calls alice with two tones, which the page must hear.
func browserAnswersSIPp(t *testing.T, pageURL func(*Relay) string, mod func(*config.Config)) {
	tones, quiet := []float64{500, 1300}, 2500.0
	dir := t.TempDir()
	wav := filepath.Join(dir, "mic.wav")
	if err := browsertest.WriteToneWAV(wav, []float64{700}, 10); err != nil {
		t.Fatal(err)
	}
	ulaw := filepath.Join(dir, "tones.ulaw")
	if err := writeToneULaw(ulaw, tones, 20); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()

	port := sippFreePort(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), sippCarrier(port), mod))
	done := answeringBrowser(t, ctx, browser, r, browsertest.Options{
		PageURL: pageURL(r), Answer: true, User: "alice", Password: "wonderland",
		Hold: 5 * time.Second, Freqs: append(tones, quiet),
	})

	// SIPp plays the tones after the ACK and waits for the page's BYE.
	play := fmt.Sprintf(`  <nop><action><exec rtp_stream="%s,-1,0"/></action></nop>
`, ulaw)
	scen := fmt.Sprintf(sippHead, "browser", "", "") + play + sippRecvBye
	runSIPp(t, ctx, r, port, "alice", scen)

	res := <-done
	if res.err != nil {
		t.Fatalf("browser: %v (log: %v)", res.err, res.res.Log)
	}
	if !res.res.Established || !res.res.MediaConnected {
		t.Fatalf("browser call not established/connected: %+v", res.res)
	}
	t.Logf("tone levels in the browser (dB over noise floor): %v", res.res.ToneDB)
	floor := res.res.ToneDB[quiet]
	for _, f := range tones {
		if db := res.res.ToneDB[f]; db < 20 || db < floor+15 {
			t.Errorf("%v Hz from SIPp reached the browser at %.1f dB (quiet %v Hz at %.1f dB): not detected", f, db, quiet, floor)
		}
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// browserResult is what a browser call running in the background gave.
type browserResult struct {
	res browsertest.Result
	err error
}

// answeringBrowser starts o (an Answer call) in browser and returns once
// the page has registered as o.User with the relay; the call's result
// comes on the channel.
func answeringBrowser(t *testing.T, ctx context.Context, browser *browsertest.Browser, r *Relay, o browsertest.Options) <-chan browserResult {
	t.Helper()
	done := make(chan browserResult, 1)
	go func() {
		res, err := browser.Call(ctx, o)
		done <- browserResult{res, err}
	}()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case res := <-done:
			t.Fatalf("browser gave up before registering: %v (log: %v)", res.err, res.res.Log)
		default:
		}
		if r.Registered(o.User) == 1 {
			return done
		}
	}
	t.Fatal("the page did not register")
	return nil
}

// sippFreePort finds a loopback UDP port nobody holds right now.
func sippFreePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

const sippRecvNotify = `  <recv request="NOTIFY">%s</recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
`

// TestSIPpRefer: SIPp calls the browser, then transfers it with REFER to
// a number on another trunk; the relay reports with NOTIFY, hangs up on
// SIPp, and the browser talks to the target (audio checked).
func TestSIPpRefer(t *testing.T) {
	port := sippFreePort(t)
	target := newTrunkUAS(t)
	r := startRelay(t, chain(withUsers("alice", "wonderland"), func(c *config.Config) {
		c.Trunks = append(c.Trunks, config.Trunk{Name: "target", Match: "^7", Address: "sip:" + target.addr, Codecs: []string{"PCMU"}})
	}, sippCarrier(port)))
	p := newRegPhone(t, r, "alice", "laptop", "PCMU")
	p.mustRegister("wonderland")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	scen := fmt.Sprintf(sippHead, "refer", "", "") + sippPause(1000) +
		sippInDialog("REFER", 2, "Refer-To: <sip:7001@127.0.0.1>", "") +
		`  <recv response="202"/>` + "\n" +
		fmt.Sprintf(sippRecvNotify, sippExpect("SIP/2.0 100 Trying")) +
		fmt.Sprintf(sippRecvNotify, sippExpect("SIP/2.0 200 OK")) +
		sippRecvBye
	runSIPp(t, ctx, r, port, "alice", scen)
	if got := p.sendCheck(50); got < 40 {
		t.Fatalf("after the transfer only %d of 50 frames came back from the target", got)
	}
	if r.ActiveCalls() != 1 {
		t.Fatal("the transferred call is gone")
	}
}
