//go:build unix

package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/bencode"
)

// browserOffer is enough of a browser's SDP for an ng offer.
const browserOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"

// ng sends one ng command over conn and returns the reply, or nil.
func ng(conn *net.UDPConn, n int, d map[string]any) map[string]any {
	cookie := fmt.Sprintf("c%d", n)
	b, err := bencode.Append([]byte(cookie+" "), d)
	if err != nil {
		return nil
	}
	if _, err := conn.Write(b); err != nil {
		return nil
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 65536)
	m, err := conn.Read(buf)
	if err != nil {
		return nil
	}
	_, body, _ := bytes.Cut(buf[:m], []byte(" "))
	res, _ := bencode.DecodeDict(body)
	return res
}

// TestDrainThenSIGTERM: SIGUSR1 drains a node (new ng offers refused,
// /healthz 503); SIGTERM then waits for the last call, which the proxy
// deletes, and the relay exits cleanly.
func TestDrainThenSIGTERM(t *testing.T) {
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ngAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	cfg := fmt.Sprintf("http:\n  listen: %s\nsip:\n  udp_listen: ''\n  tcp_listen: 127.0.0.1:%d\n  echo: false\n"+
		"media:\n  bind_ip: 127.0.0.1\n  port_min: 45100\n  port_max: 45199\n  webrtc_port: %d\ncdr:\n  path: %s\nng:\n  listen: %s\n",
		httpAddr, freePort(t), freeUDPPort(t), filepath.Join(dir, "cdr.db"), ngAddr)
	cmd, logs := startChild(t, cfg)
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ua, _ := net.ResolveUDPAddr("udp", ngAddr)
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := 0
	do := func(d map[string]any) map[string]any { n++; return ng(conn, n, d) }
	waitUntil(t, "the ng socket", 30*time.Second, func() bool {
		res := do(map[string]any{"command": "ping"})
		return res["result"] == "pong"
	}, logs)
	offer := map[string]any{"command": "offer", "call-id": "drain-1", "from-tag": "a", "sdp": browserOffer, "transport-protocol": "RTP/AVP"}
	if res := do(offer); res["result"] != "ok" {
		t.Fatalf("offer: %v\n%s", res, logs.String())
	}

	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "/healthz 503", 10*time.Second, func() bool {
		res, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusServiceUnavailable
	}, logs)
	offer["call-id"] = "drain-2"
	if res := do(offer); res["result"] != "error" {
		t.Fatalf("offer on a drained node: %v", res)
	}

	// SIGTERM: the relay stays up for its call; the proxy can still query it.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the drained relay to note SIGTERM", 10*time.Second, func() bool {
		return bytes.Contains([]byte(logs.String()), []byte("stopping when the last call ends"))
	}, logs)
	if res := do(map[string]any{"command": "query", "call-id": "drain-1"}); res["result"] != "ok" {
		t.Fatalf("query after SIGTERM: %v", res)
	}
	if res := do(map[string]any{"command": "delete", "call-id": "drain-1"}); res["result"] != "ok" {
		t.Fatalf("delete: %v", res)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("relay exit: %v\n%s", exitErr, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the relay did not exit after its last call\n%s", logs.String())
	}
}
