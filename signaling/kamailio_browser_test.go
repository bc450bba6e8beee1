//go:build linux

package signaling

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// exampleKamailioCfg is the example deployment, signaling/ng/kamailio.cfg.
const exampleKamailioCfg = "ng/kamailio.cfg"

// startExampleKamailio runs Debian's Kamailio with the example deployment's
// configuration, its addresses moved to free loopback ports: SIP over UDP,
// SIP over WebSocket (returned as ws), the trunk at trunkPort, and the two
// mediarelay nodes a and b in place of the example's two, with its
// weights. It returns the WebSocket listener's address (host:port) and
// Kamailio's log. A
// line the example no longer has fails the test: the example and this
// copy of it stay in step.
func startExampleKamailio(t *testing.T, trunkPort int, a, b *Relay) (ws string, log *syncBuffer) {
	t.Helper()
	text, err := os.ReadFile(exampleKamailioCfg)
	if err != nil {
		t.Fatal(err)
	}
	udp := freePortPair(t)
	wsPort := udp + 1
	cfg := string(text)
	for _, s := range [][2]string{
		{"log_stderror=no", "log_stderror=yes"},
		{"listen=udp:127.0.0.1:5060", fmt.Sprintf("listen=udp:127.0.0.1:%d", udp)},
		{"listen=tcp:127.0.0.1:8088", fmt.Sprintf("listen=tcp:127.0.0.1:%d", wsPort)},
		{`#!define TRUNK "sip:127.0.0.1:5080"`, fmt.Sprintf(`#!define TRUNK "sip:127.0.0.1:%d"`, trunkPort)},
		{"udp:127.0.0.1:22222=", "udp:" + a.NGAddr().String() + "="},
		{"udp:127.0.0.1:22223=", "udp:" + b.NGAddr().String() + "="},
	} {
		if strings.Count(cfg, s[0]) != 1 {
			t.Fatalf("%s has no single %q to substitute: update the test with the example", exampleKamailioCfg, s[0])
		}
		cfg = strings.Replace(cfg, s[0], s[1], 1)
	}
	log = runKamailio(t, cfg, udp)
	return fmt.Sprintf("127.0.0.1:%d", wsPort), log
}

// sippEchoTrunk is a SIPp UAS for a trunk behind Kamailio: it answers a
// call to sip:opus… with Opus (at the payload type offered) and any other
// with PCMU, and (run with -rtp_echo) echoes the audio back; it takes the
// caller's BYE (sippRecvBye). It keeps answering until it is stopped.
const sippEchoTrunk = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="echo trunk">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="INVITE sip:opus" search_in="msg" check_it="false" assign_to="opus"/>
      <ereg regexp="a=rtpmap:([0-9]+) opus/48000" search_in="body" check_it="false" assign_to="rtpmap,pt"/>
    </action>
  </recv>
  <nop next="opus" test="opus"/>
  <send>
    <![CDATA[
%[1]s
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <nop next="answered"/>
  <label id="opus"/>
  <send>
    <![CDATA[
%[1]s
      m=audio [media_port] RTP/AVP [$pt]
      [$rtpmap]/2
    ]]>
  </send>
  <label id="answered"/>
  <recv request="ACK" crlf="true"/>
%[2]s`

// sippEchoAnswer is the 200 OK of sippEchoTrunk up to its m= line.
const sippEchoAnswer = `      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:trunk@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=trunk 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0`

// startSIPpTrunk runs SIPp (Debian's sip-tester) as an echoing trunk (see
// sippEchoTrunk) on 127.0.0.1 until cleanup, and returns its SIP port.
func startSIPpTrunk(t *testing.T) int {
	t.Helper()
	sf := filepath.Join(t.TempDir(), "trunk.xml")
	if err := os.WriteFile(sf, []byte(fmt.Sprintf(sippEchoTrunk, sippEchoAnswer, sippRecvBye)), 0o644); err != nil {
		t.Fatal(err)
	}
	return startSIPpUAS(t, "-sf", sf).port
}

// kamTones are the microphone's tones, which SIPp echoes back to the
// browser; kamQuiet is a frequency nobody sends.
var kamTones, kamQuiet = []float64{400, 1000}, 2500.0

// kamailioBrowser places calls from headless Chromium (the JsSIP page,
// registering over WebSocket with Kamailio as the example deploys
// browsers) through Kamailio to the SIPp trunk.
type kamailioBrowser struct {
	t       *testing.T
	ctx     context.Context
	browser *browsertest.Browser
	page    string          // the JsSIP page's URL, up to the ws parameter
	seen    map[string]bool // relay call ids already attributed
}

// kamCall is one call as the test saw it.
type kamCall struct {
	res  browsertest.Result
	node int // index in the nodes given to call
	cdr  cdr.Record
}

// call places a call to target through Kamailio at ws, holds it for hold,
// and returns what the browser heard, which of nodes carried it and its
// CDR. during, if set, runs once the call is up on its node. The call must
// succeed, with the tones echoed back to the browser.
func (k *kamailioBrowser) call(ws, target string, hold time.Duration, nodes []*Relay, during func(*Relay)) kamCall {
	t := k.t
	t.Helper()
	done := make(chan browserResult, 1)
	go func() {
		res, err := k.browser.Call(k.ctx, browsertest.Options{
			PageURL: k.page + "&ws=ws://" + ws + "/", Target: target, Hold: hold, Freqs: append(kamTones, kamQuiet),
		})
		done <- browserResult{res, err}
	}()
	node, id := -1, ""
	var br browserResult
	for node < 0 {
		select {
		case br = <-done:
			t.Fatalf("call to %s: not seen on any node: %v (log: %v)", target, br.err, br.res.Log)
		case <-time.After(20 * time.Millisecond):
		}
		node, id = k.newCall(nodes)
	}
	if during != nil {
		during(nodes[node])
	}
	br = <-done
	if br.err != nil {
		t.Fatalf("call to %s on node %d: %v (log: %v)", target, node, br.err, br.res.Log)
	}
	floor := br.res.ToneDB[kamQuiet]
	for _, f := range kamTones {
		if db := br.res.ToneDB[f]; db < 20 || db < floor+15 {
			t.Errorf("call to %s: %v Hz echoed by SIPp reached the browser at %.1f dB (quiet %v Hz at %.1f dB): not detected",
				target, f, db, kamQuiet, floor)
		}
	}
	rec := callRecord(t, nodes[node], id)
	if rec.Direction != DirectionNG || rec.EndCause != cdr.CauseNormalBrowser {
		t.Errorf("call to %s: CDR direction %q, end %q; want an ng call the browser ended", target, rec.Direction, rec.EndCause)
	}
	t.Logf("call to %s: node %d, %s %s/%s, tones %v", target, node, rec.Mode, rec.WebRTCCodec, rec.SIPCodec, br.res.ToneDB)
	return kamCall{br.res, node, rec}
}

// newCall finds an ng call on one of nodes that no earlier call of the
// test was, and returns the node's index and the call's id (-1 and ""
// if there is none).
func (k *kamailioBrowser) newCall(nodes []*Relay) (int, string) {
	for i, r := range nodes {
		for _, c := range r.calls.List() {
			if c.ngs != nil && !k.seen[c.id] {
				k.seen[c.id] = true
				return i, c.id
			}
		}
	}
	return -1, ""
}

// signallingCall places a call from a pion phone over Kamailio's
// WebSocket at ws (the browsers' way in; no media flows), hangs up, and
// returns which of nodes carried it.
func (k *kamailioBrowser) signallingCall(ws string, nodes []*Relay) int {
	t := k.t
	t.Helper()
	p := newPhone(t, "opus", "PCMU")
	defer p.close()
	res, err := p.inviteAddr(k.ctx, ws, "5550199", []byte(p.offer()))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("phone's call through Kamailio: %v %v", res, err)
	}
	node, id := k.newCall(nodes)
	if node < 0 {
		t.Fatal("the phone's call is on no node")
	}
	// The BYE's answer comes back from SIPp through Kamailio within the
	// shortened transaction timeout (64*T1, see TestMain) only while
	// neither is starved on this shared machine; it once did not. What
	// this call is for is the node that carried it and that the node
	// ended it when Kamailio relayed the BYE (ng delete), which the CDR
	// shows either way.
	if err := p.dcs.Bye(k.ctx); err != nil {
		t.Logf("bye through Kamailio: %v (the CDR below decides)", err)
	}
	if rec := callRecord(t, nodes[node], id); rec.EndCause != cdr.CauseNormalBrowser {
		t.Fatalf("phone's call on node %d ended %q, want %q", node, rec.EndCause, cdr.CauseNormalBrowser)
	}
	return node
}

// TestKamailioExampleBrowsers is the example deployment at work: Debian's
// Kamailio with signaling/ng/kamailio.cfg in front of two mediarelay nodes
// (ng), headless Chromium running JsSIP as the browser (registered over
// Kamailio's WebSocket) and SIPp as the trunk, echoing. The browser hears
// its own tones come back on PCMU and Opus passthrough and through the
// Opus → PCMU transcoder (a G.711-only number of the example); the calls
// spread over both nodes; once one node is drained its call in progress
// ends normally and new calls go to the other; once one is stopped,
// Kamailio stops using it and new calls still succeed.
func TestKamailioExampleBrowsers(t *testing.T) {
	kamailioInstalled(t)
	ensureJsSIP(t)
	if !browsertest.InNetns(t) {
		return
	}
	trunk := startSIPpTrunk(t)
	srv := httptest.NewServer(http.FileServer(http.Dir(bundlePage(t, jssipEsbuild, jssipDir))))
	defer srv.Close()
	wav := filepath.Join(t.TempDir(), "mic.wav")
	if err := browsertest.WriteToneWAV(wav, kamTones, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	k := &kamailioBrowser{t: t, ctx: ctx, browser: browser, seen: map[string]bool{},
		page: srv.URL + "/index.html?domain=127.0.0.1&user=alice&register=1"}

	nodes := []*Relay{ngRelay(t), ngRelay(t)}
	ws, _ := startExampleKamailio(t, trunk, nodes[0], nodes[1])
	calls := make([]int, len(nodes))
	for _, tc := range []struct {
		target, mode, web, sip string
	}{
		{"sip:5550100@127.0.0.1", mediaplan.ModePassthrough, "PCMU", "PCMU"},
		{"sip:opus@127.0.0.1", mediaplan.ModePassthrough, "opus", "opus"},
		{"sip:0044205550100@127.0.0.1", mediaplan.ModeTranscode, "opus", "PCMU"}, // G711_ONLY in the example
	} {
		c := k.call(ws, tc.target, 3*time.Second, nodes, nil)
		calls[c.node]++
		if c.cdr.Mode != tc.mode || !strings.EqualFold(c.cdr.WebRTCCodec, tc.web) || !strings.EqualFold(c.cdr.SIPCodec, tc.sip) {
			t.Errorf("call to %s: %s %s/%s, want %s %s/%s", tc.target, c.cdr.Mode, c.cdr.WebRTCCodec, c.cdr.SIPCodec, tc.mode, tc.web, tc.sip)
		}
	}
	// Spread by weight (2:1): the calls so far went wherever Kamailio put
	// them; if they all happened to go to one node, quicker calls go on
	// until the other has had one too.
	for i := 0; i < 20 && (calls[0] == 0 || calls[1] == 0); i++ {
		calls[k.signallingCall(ws, nodes)]++
	}
	t.Logf("calls per node (weights 2:1): %v", calls)
	if calls[0] == 0 || calls[1] == 0 {
		t.Fatalf("calls per node %v: Kamailio used one node only", calls)
	}

	// Drain the node that carries a call: new calls go to the other while
	// that call goes on (at least one of them offered to the drained node
	// first, which refuses it), and the call ends normally (k.call checks
	// its tones and CDR).
	drained := -1
	refused := func() float64 {
		return nodes[drained].m.Sum("mediarelay_ng_commands_total", "command", "offer", "result", "error")
	}
	k.call(ws, "sip:5550101@127.0.0.1", 6*time.Second, nodes, func(r *Relay) {
		r.Drain()
		drained = slices.Index(nodes, r)
		for i := 0; i < 20 && (i < 2 || refused() == 0); i++ {
			if n := k.signallingCall(ws, nodes); n == drained {
				t.Fatalf("a new call went to the drained node %d", n)
			}
			if i == 0 && r.ActiveCalls() != 1 {
				t.Errorf("the drained node has %d calls, want its call in progress", r.ActiveCalls())
			}
		}
		if refused() == 0 {
			t.Fatalf("Kamailio offered the drained node %d no call", drained)
		}
	})
	if c := k.call(ws, "sip:opus@127.0.0.1", 2*time.Second, nodes, nil); c.node == drained {
		t.Errorf("a new browser call went to the drained node %d", c.node)
	}
	t.Logf("drained node %d refused %v offers", drained, refused())

	// A fresh deployment whose first (heavier) node dies once Kamailio has
	// found both: its ng port goes silent. The first command Kamailio sends
	// it fails (logged with its address) and Kamailio takes the call to
	// the other node, and keeps new calls there.
	nodes = []*Relay{ngRelay(t), ngRelay(t)}
	ws, klog := startExampleKamailio(t, trunk, nodes[0], nodes[1])
	waitFor(t, "Kamailio to find both nodes", 10*time.Second, func() bool {
		return strings.Count(klog.String(), "support for it enabled") >= 2
	})
	nodes[0].ngNode.Close()
	dead := fmt.Sprintf("<udp:%s>", nodes[0].NGAddr())
	tried := func() int {
		n := 0
		for _, l := range strings.Split(klog.String(), "\n") {
			if strings.Contains(l, "ERROR") && strings.Contains(l, dead) {
				n++
			}
		}
		return n
	}
	for i := 0; i < 20 && tried() == 0; i++ {
		if k.signallingCall(ws, nodes) != 1 {
			t.Fatal("a call went to the stopped node")
		}
	}
	if tried() == 0 {
		t.Fatalf("Kamailio never tried the stopped node %s", dead)
	}
	before := tried()
	for _, target := range []string{"sip:5550102@127.0.0.1", "sip:0044205550102@127.0.0.1"} {
		if c := k.call(ws, target, 2*time.Second, nodes, nil); c.node != 1 {
			t.Errorf("call to %s went to the stopped node", target)
		}
	}
	t.Logf("Kamailio's failed commands to the stopped node: %d before the browser calls, %d after", before, tried())
}
