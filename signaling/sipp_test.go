package signaling

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
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

// TestSIPpTrunk puts SIPp (Debian's sip-tester) on the trunk side: its
// built-in UAS answers PCMU and echoes RTP, and the frames a WebRTC client
// sends come back byte for byte.
func TestSIPpTrunk(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("sipp not installed: run .ci/deps")
	}
	port, mport := freeUDPPort(t), freeUDPPort(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", fmt.Sprint(port),
		"-mi", "127.0.0.1", "-mp", fmt.Sprint(mport), "-rtp_echo", "-m", "1", "-nostdin",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"))
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	time.Sleep(500 * time.Millisecond) // SIPp binds its socket after start

	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "sipp", Match: ".*", Address: fmt.Sprintf("sip:127.0.0.1:%d", port), Codecs: []string{"PCMU"}}}
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
	case <-exited:
		if waitErr != nil {
			t.Fatalf("sipp: %v\n%s", waitErr, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("sipp did not see the call end\n%s", out.String())
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}
