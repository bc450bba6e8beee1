//go:build linux

package signaling

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// kamailioCfg is a minimal Kamailio 5.6 proxy that drives a media node over
// ng as a WebRTC gateway does: the browser's offer goes on as plain RTP,
// the SIP side's answer comes back as WebRTC, BYE deletes the call.
const kamailioCfg = `#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:%[1]d
listen=tcp:127.0.0.1:%[1]d
mpath="%[2]s"
loadmodule "pv.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "%[3]s")
modparam("rtpengine", "rtpengine_tout_ms", 300)
modparam("rtpengine", "rtpengine_retr", 1)

request_route {
	if (has_totag()) {
		if (loose_route()) {
			if (is_method("BYE")) {
				rtpengine_delete();
			}
			t_relay();
			exit;
		}
		if (is_method("ACK") && t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (is_method("INVITE")) {
		record_route();
		if (!rtpengine_offer("RTP/AVP ICE=remove rtcp-mux-demux replace-origin replace-session-connection trust-address")) {
			sl_send_reply("503", "No media node");
			exit;
		}
		t_on_reply("MEDIA");
	}
	$du = "sip:127.0.0.1:%[4]d";
	t_relay();
}

onreply_route[MEDIA] {
	if (has_body("application/sdp")) {
		rtpengine_answer("UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require");
	}
}
`

// kamailioModules is where Debian's kamailio package puts its modules.
func kamailioModules() string {
	for _, d := range []string{"/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/aarch64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules"} {
		if _, err := os.Stat(filepath.Join(d, "rtpengine.so")); err == nil {
			return d
		}
	}
	return ""
}

// kamailioInstalled returns Debian's kamailio binary and its modules
// directory; without them the test fails under CI (whose .ci/deps
// installs them) and is skipped elsewhere.
func kamailioInstalled(t *testing.T) (bin, mods string) {
	t.Helper()
	bin, err := exec.LookPath("kamailio")
	mods = kamailioModules()
	if err != nil || mods == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("kamailio with its rtpengine module is not installed (.ci/deps installs it): %v", err)
		}
		t.Skip("kamailio is not installed (.ci/deps installs it)")
	}
	return bin, mods
}

// startKamailio runs Debian's Kamailio with kamailioCfg in the foreground,
// with the ng nodes given ("udp:127.0.0.1:PORT=WEIGHT"), and returns its
// SIP port; it is stopped (its process group) at cleanup.
func startKamailio(t *testing.T, uasPort int, nodes ...string) int {
	t.Helper()
	_, mods := kamailioInstalled(t)
	port := freeUDPPort(t)
	runKamailio(t, fmt.Sprintf(kamailioCfg, port, mods, strings.Join(nodes, " "), uasPort), port)
	return port
}

// runKamailio runs Debian's Kamailio in the foreground with the
// configuration cfg, until cleanup (its process group is stopped then),
// and returns its log once it answers SIP on 127.0.0.1:udpPort.
func runKamailio(t *testing.T, cfg string, udpPort int) *syncBuffer {
	t.Helper()
	bin, _ := kamailioInstalled(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w := logOnFailure(t, "kamailio")
	cmd := exec.Command(bin, "-f", file, "-DD", "-E", "-m", "32", "-M", "4", "-Y", dir, "-w", dir)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kamailio: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	// Ready when it answers OPTIONS (with 404: no route, which is fine).
	waitFor(t, "kamailio to listen", 10*time.Second, func() bool {
		c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", udpPort))
		if err != nil {
			return false
		}
		defer c.Close()
		msg := fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKprobe%d\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: probe%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			udpPort, c.LocalAddr(), time.Now().UnixNano(), time.Now().UnixNano())
		_, _ = c.Write([]byte(msg))
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(make([]byte, 2048))
		return err == nil && n > 0
	})
	return w
}

// TestKamailioDrivesNG: a browser (pion) calls through Debian's Kamailio,
// whose rtpengine module uses mediarelay over ng, to a SIP UAS with plain
// RTP that echoes; audio passes unchanged both ways, BYE deletes the call,
// and the CDR names ng and the proxy.
func TestKamailioDrivesNG(t *testing.T) {
	r := ngRelay(t)
	uas := newTrunkUAS(t)
	uas.codecs = []string{"PCMU"}
	uas.setCapture(make(chan []byte, 1000))
	_, uasPort := splitHostPort(uas.addr)
	kport := startKamailio(t, uasPort, ngNode(r, 1))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPhone(t, "PCMU", "opus")
	dcs := callThroughKamailio(ctx, t, kport, p)
	connect(t, p)

	sent := p.sendFrames(25, 160)
	toSIP := matchPayloads(t, "browser → sip", sent, audioPayloads(uas.capture))
	toWeb := matchPayloads(t, "sip → browser (echo)", sent, phonePayloads(p))

	calls := r.calls.List()
	if len(calls) != 1 || calls[0].ngs == nil {
		t.Fatalf("%d calls on the relay, want one ng call", len(calls))
	}
	relayCallID := calls[0].id
	if err := dcs.Bye(ctx); err != nil {
		t.Fatalf("bye: %v", err)
	}
	waitFor(t, "the ng call's CDR", 10*time.Second, func() bool {
		rec, err := r.CDR().Query(context.Background(), relayCallID)
		if err != nil || rec.EndCause == "" || rec.EndCause == "in_progress" {
			return false
		}
		if rec.Direction != DirectionNG || !strings.HasPrefix(rec.Trunk, "ng:127.0.0.1:") || rec.Mode != mediaplan.ModePassthrough ||
			rec.WebRTCPacketsIn < uint64(toSIP) || rec.SIPPacketsIn < uint64(toWeb) {
			t.Fatalf("cdr %+v; forwarded %d and %d", rec, toSIP, toWeb)
		}
		return true
	})
	if r.ActiveCalls() != 0 {
		t.Fatal("the call outlived Kamailio's delete")
	}
}

// ngNode is r's entry in Kamailio's rtpengine_sock, with weight w.
func ngNode(r *Relay, w int) string { return fmt.Sprintf("udp:%s=%d", r.NGAddr(), w) }

// callThroughKamailio places a call from the phone through Kamailio (SIP over
// TCP: a WebRTC offer is larger than a UDP datagram may be, and browsers use
// a stream) and applies the WebRTC answer it gets.
func callThroughKamailio(ctx context.Context, t *testing.T, kport int, p *phone) *sipgo.DialogClientSession {
	t.Helper()
	ua, _ := sipgo.NewUA(sipgo.WithUserAgent("browser"), sipgo.WithUserAgentHostname("127.0.0.1"))
	cli, _ := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	t.Cleanup(func() { ua.Close() })
	tcp := sip.HeaderParams{{K: "transport", V: "tcp"}}
	dua := &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "alice", Host: "127.0.0.1", UriParams: tcp}}}
	dcs, err := dua.Invite(ctx, sip.Uri{User: "bob", Host: "127.0.0.1", Port: kport, UriParams: tcp}, []byte(p.offer()),
		sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	if err := dcs.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("call through kamailio: %v", err)
	}
	if err := dcs.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	answer := string(dcs.InviteResponse.Body())
	if !strings.Contains(answer, "a=fingerprint") || !strings.Contains(answer, "a=ice-ufrag") {
		t.Fatalf("the browser got no WebRTC answer:\n%s", answer)
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	return dcs
}

// twoNodes starts two ng relays behind Kamailio, weighted 1000 to 1, and
// a plain UAS; out takes the first node out (drain, or its ng port gone)
// after Kamailio has started. Two calls must then both land on the second.
func twoNodes(t *testing.T, out func(a *Relay)) (a, b *Relay) {
	t.Helper()
	a, b = ngRelay(t), ngRelay(t)
	uas := newTrunkUAS(t)
	uas.codecs = []string{"PCMU"}
	_, uasPort := splitHostPort(uas.addr)
	kport := startKamailio(t, uasPort, ngNode(a, 1000), ngNode(b, 1))
	out(a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		dcs := callThroughKamailio(ctx, t, kport, newPhone(t, "PCMU", "opus"))
		if a.ActiveCalls() != 0 || b.ActiveCalls() != 1 {
			t.Fatalf("call %d: %d calls on the node taken out, %d on the other", i, a.ActiveCalls(), b.ActiveCalls())
		}
		if err := dcs.Bye(ctx); err != nil {
			t.Fatalf("bye: %v", err)
		}
		waitFor(t, "the call to end", 10*time.Second, func() bool { return b.ActiveCalls() == 0 })
	}
	return a, b
}

// TestKamailioSkipsDrainedNode: once the first node is drained, its offers
// are refused in rtpengine's words and Kamailio puts every new call on the
// other node.
func TestKamailioSkipsDrainedNode(t *testing.T) {
	a, _ := twoNodes(t, (*Relay).Drain)
	// Weighted 1000:1, the drained node was asked first at least once
	// (all but certainly) and refused.
	if n := a.m.Sum("mediarelay_ng_commands_total", "command", "offer", "result", "error"); n < 1 {
		t.Fatalf("the drained node refused no offer (mediarelay_ng_commands_total{command=offer,result=error} = %v)", n)
	}
}

// TestKamailioSkipsSilentNode: when a node stops answering ng (its process
// died: nothing on its ng port), Kamailio stops using it and new calls
// succeed on the other node.
func TestKamailioSkipsSilentNode(t *testing.T) {
	twoNodes(t, func(r *Relay) { r.ngNode.Close() })
}
