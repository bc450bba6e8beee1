package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/pkg/metrics"
)

// moduleRoot finds the mediarelay module's directory, walking up from the
// working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/mediarelay/mediarelay")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("mediarelay module root not found above the working directory")
		}
		dir = parent
	}
}

// relayBinary returns a mediarelay binary: this executable when it is
// mediarelay (the usual `mediarelay bench --spawn`), else one built with
// `go build` into tmpDir (tests, `go run`).
func relayBinary(ctx context.Context, tmpDir string, log *slog.Logger) (string, error) {
	if exe, err := os.Executable(); err == nil {
		if base := filepath.Base(exe); strings.HasPrefix(base, "mediarelay") && !strings.HasSuffix(base, ".test") {
			return exe, nil
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("locate mediarelay to build: %w", err)
	}
	out := filepath.Join(tmpDir, "mediarelay")
	log.Info("building mediarelay", "dir", root)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/mediarelay")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/mediarelay: %w: %s", err, tail(b, 2000))
	}
	return out, nil
}

// relayProc is a mediarelay child started by --spawn.
type relayProc struct {
	cmd  *exec.Cmd
	ws   string
	ng   string // the ng control socket, with --control ng
	done chan struct{}
}

// relayConfig writes the YAML for a relay whose single trunk (matching every
// user) is the bench UAS, with the scenario's codecs, media mode and SRTP.
//
// Callers authenticate as on a public relay: with token credentials minted
// from creds.TokenSecret, or as creds.User, whose calls are then not
// capped per user (the bench places them all).
//
// ngPort, when not 0, opens the ng control socket there.
func relayConfig(sc Scenario, uasAddr, dir string, httpPort, sipPort, webrtcPort, portMin, portMax, ngPort int, creds Credentials) string {
	srtp := "off"
	if sc.TrunkSRTP {
		srtp = "required"
	}
	mode := "passthrough"
	switch {
	case sc.E2E:
		mode = "e2e"
	case sc.Transcode():
		mode = "transcode"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "http:\n  listen: 127.0.0.1:%d\n", httpPort)
	fmt.Fprintf(&b, "sip:\n  udp_listen: 127.0.0.1:%d\n  tcp_listen: 127.0.0.1:%d\n  host: 127.0.0.1\n  echo: false\n", sipPort, sipPort)
	// All the bench's calls come from one address, faster than a
	// production source may place them.
	b.WriteString("  invite_rate: 100000\n  invite_burst: 100000\n")
	if creds.TokenSecret != "" {
		fmt.Fprintf(&b, "  token_secret: %q\n", creds.TokenSecret)
	}
	if creds.User != "" {
		b.WriteString("  user_max_calls: 0\n  user_call_rate: 0\n")
	}
	fmt.Fprintf(&b, "media:\n  bind_ip: 127.0.0.1\n  port_min: %d\n  port_max: %d\n  webrtc_port: %d\n  timeout: 30s\n", portMin, portMax, webrtcPort)
	fmt.Fprintf(&b, "cdr:\n  path: %s\n", filepath.Join(dir, "cdr.db"))
	b.WriteString("log:\n  level: warn\n")
	if ngPort != 0 {
		fmt.Fprintf(&b, "ng:\n  listen: 127.0.0.1:%d\n", ngPort)
	}
	if creds.User != "" && creds.TokenSecret == "" {
		fmt.Fprintf(&b, "users:\n  - name: %q\n    password: %q\n", creds.User, creds.Password)
	}
	b.WriteString("trunks:\n  - name: bench\n    match: \".*\"\n")
	fmt.Fprintf(&b, "    address: sip:%s\n    transport: udp\n    codecs: [%s]\n    media_mode: %s\n    srtp: %s\n", uasAddr, sc.TrunkCodec, mode, srtp)
	if sc.TrunkSRTP {
		// SDES keys over UDP are fine on loopback, and the benchmark needs them.
		b.WriteString("    allow_sdes_over_insecure_transport: true\n")
	}
	return b.String()
}

// spawnRelay starts `mediarelay serve --config FILE` and waits for /healthz.
// With ng, it also listens for rtpengine's ng protocol. Its ports are
// found free a moment before the relay binds them, so on a busy machine
// another process can take one first (a client's ephemeral port on the
// SIP TCP port, say): a relay that exits at start is tried again on other
// ports, twice.
func spawnRelay(ctx context.Context, log *slog.Logger, logOut io.Writer, bin string, sc Scenario, uasAddr, tmpDir string, creds Credentials, ng bool, place *Placement) (*relayProc, error) {
	if bin == "" {
		var err error
		if bin, err = relayBinary(ctx, tmpDir, log); err != nil {
			return nil, err
		}
	}
	var err error
	for range 3 {
		var p *relayProc
		if p, err = startRelay(ctx, logOut, bin, sc, uasAddr, tmpDir, creds, ng, place); !errors.Is(err, errExitedAtStart) {
			return p, err
		}
		log.Warn("relay exited at start; trying other ports", "err", err)
	}
	return nil, err
}

// errExitedAtStart is a spawned relay that stopped before it was healthy.
var errExitedAtStart = errors.New("mediarelay exited at start")

// startRelay is one try of spawnRelay.
func startRelay(ctx context.Context, logOut io.Writer, bin string, sc Scenario, uasAddr, tmpDir string, creds Credentials, ng bool, place *Placement) (*relayProc, error) {
	httpPort, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	sipPort, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	// A random 4000-port block below rtpengine's, so concurrent runs on one
	// machine rarely collide; the WebRTC port just above it, outside the range.
	portMin := 20000 + 2*rand.IntN(8000)
	webrtcPort, err := freeUDPPortAt(portMin+4000, portMin+4100)
	if err != nil {
		return nil, err
	}
	ngPort := 0
	if ng {
		if ngPort, err = freeUDPPort(); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(tmpDir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(relayConfig(sc, uasAddr, tmpDir, httpPort, sipPort, webrtcPort, portMin, portMin+3999, ngPort, creds)), 0o600); err != nil {
		return nil, fmt.Errorf("write relay config: %w", err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	tail := &tailWriter{max: 2048} // what it said, if it exits at start
	cmd.Stdout = io.MultiWriter(logOut, tail)
	cmd.Stderr = cmd.Stdout
	cmd.Dir = tmpDir
	if err := place.Start(cmd); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", bin, err)
	}
	p := &relayProc{cmd: cmd, ws: fmt.Sprintf("ws://127.0.0.1:%d/ws", httpPort), done: make(chan struct{})}
	if ng {
		p.ng = fmt.Sprintf("127.0.0.1:%d", ngPort)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	health := "http://" + httpAddr + "/healthz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		if healthy(httpAddr) {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%w (%v); it said:\n%s\nconfig:\n%s", errExitedAtStart, cmd.ProcessState, tail.String(), mustRead(cfgPath))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("mediarelay not healthy at %s after 30s", health)
		}
	}
}

// healthy asks GET /healthz with a request head padded to a power of two
// (see padHead), so a head-sniffing server answers at once.
func healthy(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	head := padHead("GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n") + "\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		return false
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

func mustRead(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// Pid is the relay's process id.
func (p *relayProc) Pid() int { return p.cmd.Process.Pid }

// Stop ends the relay this benchmark started, by its PID.
func (p *relayProc) Stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// callAPIURL is mediarelay's call API beside its SIP-over-WebSocket URL:
// the same host and port, GET /api/calls. The API answers on loopback
// only (without http.admin_token), so "" for any other host.
func callAPIURL(ws string) string {
	u, err := url.Parse(ws)
	if err != nil {
		return ""
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err != nil || !ip.IsLoopback() {
		return ""
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return ""
	}
	u.Path, u.RawQuery = "/api/calls", ""
	return u.String()
}

// relayCalls asks the relay's call API how each call's browser leg is
// carried (udp4, tcp4, ...) and in which media mode (passthrough, e2e,
// ...), so the report says what the relay did, not only what the load
// client meant it to.
func relayCalls(ctx context.Context, api string) (transports, modes map[string]int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	if err != nil {
		return nil, nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", api, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", api, res.Status)
	}
	var calls []struct {
		Mode string `json:"mode"`
		Legs map[string]struct {
			Transport string `json:"transport"`
		} `json:"legs"`
	}
	if err := json.NewDecoder(res.Body).Decode(&calls); err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", api, err)
	}
	transports, modes = map[string]int{}, map[string]int{}
	for _, c := range calls {
		tr := c.Legs[metrics.LegWebRTC].Transport
		if tr == "" {
			tr = "none"
		}
		transports[tr]++
		modes[c.Mode]++
	}
	return transports, modes, nil
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if over := len(w.b) - w.max; over > 0 {
		w.b = append(w.b[:0], w.b[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}
