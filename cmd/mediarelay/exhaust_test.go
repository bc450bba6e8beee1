package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveEnv makes the test binary run `mediarelay serve` (see TestMain), so a
// test can start a relay as a child process under prlimit.
const serveEnv = "MR_EXHAUST_TEST_SERVE" // not MEDIARELAY_*: the relay refuses unknown ones

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		tuneRuntime() // as main does for serve
		os.Exit(run(append([]string{"serve"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// startChild runs `mediarelay serve` with the YAML configuration cfg as a
// child process (behind the command and arguments of wrap, if any), with
// its output in the returned buffer.
func startChild(t *testing.T, cfg string, wrap ...string) (*exec.Cmd, *lockedBuf) {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string(nil), wrap...), exe, "--config", cfgPath)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	logs := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, logs
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sipTCPAnswers reports whether OPTIONS over a new TCP connection gets 200.
func sipTCPAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "OPTIONS sip:relay SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK%d\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\n"+
		"To: <sip:relay>\r\nCall-ID: %d@p\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", time.Now().UnixNano(), time.Now().UnixNano())
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SIP/2.0 200")
}

func httpAnswers(addr string) bool {
	cl := http.Client{Timeout: 2 * time.Second}
	res, err := cl.Get("http://" + addr + "/healthz")
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// TestListenersSurviveFDExhaustion runs the relay under `prlimit
// --nofile=64:64` and opens far more idle connections than it has
// descriptors for. Accepting fails (EMFILE); the listeners back off instead
// of stopping, the idle connections are reaped, and SIP over TCP and HTTP
// answer again without anyone closing the flood.
func TestListenersSurviveFDExhaustion(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sipAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf("http:\n  listen: %s\n  max_conns_per_source: 100000\nsip:\n  udp_listen: ''\n  tcp_listen: %s\n"+
		"  tcp_message_timeout: 2s\n  max_conns_per_source: 100000\n  echo: false\n"+
		"media:\n  bind_ip: 127.0.0.1\n  port_min: 45000\n  port_max: 45099\n  webrtc_port: %d\ncdr:\n  path: %s\n",
		httpAddr, sipAddr, freeUDPPort(t), filepath.Join(dir, "cdr.db"))
	cmd, logs := startChild(t, cfg, prlimit, "--nofile=64:64")
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	waitUntil(t, "relay to start", 30*time.Second, func() bool { return httpAnswers(httpAddr) && sipTCPAnswers(sipAddr) }, logs)

	// The flood: idle connections that never send a byte, to both listeners.
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < 200; i++ {
		addr := sipAddr
		if i%4 == 0 {
			addr = httpAddr
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue // the backlog is full: that is exhaustion too
		}
		flood = append(flood, c)
	}
	waitUntil(t, "descriptor exhaustion (accept backing off)", 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "accept failed; backing off")
	})
	if !strings.Contains(logs.String(), "too many open files") {
		t.Logf("relay log:\n%s", logs.String())
		t.Fatal("accept failed, but not with EMFILE")
	}
	// Nobody closes the flood: the relay reaps it and serves again.
	waitUntil(t, "SIP TCP and HTTP to answer again", 90*time.Second, func() bool {
		return sipTCPAnswers(sipAddr) && httpAnswers(httpAddr)
	})
	if strings.Contains(logs.String(), "listener stopped") {
		t.Fatalf("a listener stopped:\n%s", logs.String())
	}
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool, logs ...*lockedBuf) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	for _, l := range logs {
		t.Logf("relay log:\n%s", l.String())
	}
	t.Fatalf("timed out waiting for %s", what)
}
