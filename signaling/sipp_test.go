package signaling

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// freeUDPPort finds a loopback UDP port nobody holds right now.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// sippUAS is SIPp (Debian's sip-tester) answering calls on 127.0.0.1 and
// echoing their RTP (-rtp_echo).
type sippUAS struct {
	port   int
	out    bytes.Buffer  // its output; read it once it has exited
	exited chan struct{} // closed when it exits
	err    error         // its exit status, once exited
}

// startSIPpUAS runs SIPp with args (a scenario, a call limit) as a UAS on
// a free loopback port, in a directory of its own, until cleanup; its
// output and errors are logged if the test fails. Without SIPp the test
// fails under CI (.ci/deps installs it) and is skipped elsewhere.
func startSIPpUAS(t *testing.T, args ...string) *sippUAS {
	t.Helper()
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sipp not installed: run .ci/deps (Debian package sip-tester)")
		}
		t.Skip("sipp is not installed (Debian package sip-tester; .ci/deps installs it)")
	}
	s := &sippUAS{port: freeUDPPort(t), exited: make(chan struct{})}
	dir := t.TempDir()
	cmd := exec.Command(sipp, append(args, "-i", "127.0.0.1", "-p", fmt.Sprint(s.port),
		"-mi", "127.0.0.1", "-mp", fmt.Sprint(freeUDPPort(t)), "-rtp_echo", "-nostdin",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"))...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
			t.Logf("sipp:\n%s\n%s", tailStr(s.out.String(), 3000), tailStr(string(errs), 3000))
		}
	})
	// SIPp binds its socket soon after it starts. Probing by binding the
	// port ourselves would race with SIPp's own bind (and made it exit
	// with "Address already in use"), so read the kernel's socket table.
	waitFor(t, "sipp to listen", 10*time.Second, func() bool {
		select {
		case <-s.exited:
			t.Fatalf("sipp exited: %v", s.err)
		default:
		}
		return udpBound(t, s.port)
	})
	return s
}

// udpBound says whether a UDP socket of this network namespace is bound
// to 127.0.0.1:port, from /proc/net/udp.
func udpBound(t *testing.T, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatalf("sipp to listen: %v", err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == want {
			return true
		}
	}
	return false
}

// TestSIPpTrunk puts SIPp (Debian's sip-tester) on the trunk side: its
// built-in UAS answers PCMU and echoes RTP, and the frames a WebRTC client
// sends come back byte for byte.
func TestSIPpTrunk(t *testing.T) {
	s := startSIPpUAS(t, "-sn", "uas", "-m", "1")
	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "sipp", Match: ".*", Address: fmt.Sprintf("sip:127.0.0.1:%d", s.port), Codecs: []string{"PCMU"}}}
	})
	p := newPhone(t, "PCMU")
	p.call(r, "service")
	sent := p.sendFrames(100, 160)
	got := p.collect(time.Second)
	want := map[string]bool{}
	for _, s := range sent {
		want[string(s)] = true
	}
	for _, pkt := range got {
		if !want[string(pkt.Payload)] {
			t.Fatalf("a packet came back that was never sent: %q", pkt.Payload[:12])
		}
	}
	if len(got) < len(sent)*9/10 {
		t.Fatalf("only %d of %d frames came back", len(got), len(sent))
	}
	p.hangup()
	select {
	case <-s.exited:
		if s.err != nil {
			t.Fatalf("sipp: %v", s.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sipp did not see the call end")
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}
