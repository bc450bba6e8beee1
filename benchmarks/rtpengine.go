package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/pkg/bencode"
)

// ngClient speaks rtpengine's ng control protocol: "COOKIE bencoded-dict"
// datagrams over UDP, replies carrying the same cookie.
type ngClient struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	pending map[string]chan map[string]any
	seq     uint64
}

func newNGClient(addr string) (*ngClient, error) {
	ra, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("ng address %q: %w", addr, err)
	}
	conn, err := net.DialUDP("udp4", nil, ra)
	if err != nil {
		return nil, fmt.Errorf("ng dial %s: %w", addr, err)
	}
	n := &ngClient{conn: conn, pending: map[string]chan map[string]any{}}
	go n.readLoop()
	return n, nil
}

func (n *ngClient) readLoop() {
	buf := make([]byte, 65536)
	for {
		l, err := n.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		cookie, body, ok := bytes.Cut(buf[:l], []byte(" "))
		if !ok {
			continue
		}
		d, err := bencode.DecodeDict(body)
		if err != nil {
			continue
		}
		n.mu.Lock()
		ch := n.pending[string(cookie)]
		delete(n.pending, string(cookie))
		n.mu.Unlock()
		if ch != nil {
			ch <- d
		}
	}
}

// Do sends one command and waits for its reply, retransmitting over UDP.
func (n *ngClient) Do(ctx context.Context, cmd map[string]any) (map[string]any, error) {
	n.mu.Lock()
	n.seq++
	cookie := "b" + strconv.FormatUint(n.seq, 36) + randToken(3)
	ch := make(chan map[string]any, 1)
	n.pending[cookie] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.pending, cookie)
		n.mu.Unlock()
	}()
	body, err := bencode.Append([]byte(cookie+" "), cmd)
	if err != nil {
		return nil, err
	}
	for try := 0; try < 5; try++ {
		if _, err := n.conn.Write(body); err != nil {
			return nil, fmt.Errorf("ng send: %w", err)
		}
		t := time.NewTimer(time.Second)
		select {
		case d := <-ch:
			t.Stop()
			if r, _ := d["result"].(string); r != "ok" && r != "pong" {
				reason, _ := d["error-reason"].(string)
				return d, fmt.Errorf("ng %v: result %q: %s: %w", cmd["command"], r, reason, errNGResult)
			}
			return d, nil
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	return nil, fmt.Errorf("ng %v: no reply", cmd["command"])
}

func (n *ngClient) Close() { _ = n.conn.Close() }

// ngSignaler sets calls up through rtpengine the way a SIP proxy would
// (kamailio's rtpengine module), minus SIP: the browser's offer goes through
// an ng offer, the rewritten plain-RTP offer to the trunk UAS, the UAS's
// answer through an ng answer back to the browser.
type ngSignaler struct {
	ng  *ngClient
	uas *UAS
	sc  Scenario
	log *slog.Logger
}

func (s *ngSignaler) Setup(ctx context.Context, c *call, offer string) (string, int, error) {
	trunkProto := "RTP/AVP"
	if s.sc.TrunkSRTP {
		trunkProto = "RTP/SAVP"
	}
	cmd := map[string]any{
		"command": "offer", "call-id": c.id, "from-tag": "ft" + c.user, "sdp": hostAddress(offer),
		// What a SIP proxy passes as the offer's source address.
		"received-from":      []any{"IP4", "127.0.0.1"},
		"transport-protocol": trunkProto,
		"ICE":                "remove",
		"rtcp-mux":           []any{"demux"},
		"replace":            []any{"origin", "session-connection"},
	}
	if s.sc.TrunkCodec != "" && s.sc.TrunkCodec != s.sc.Codec.Name {
		// Transcoding: offer the trunk only its codec, keep the browser's on its side.
		cmd["codec"] = map[string]any{"transcode": []any{s.sc.TrunkCodec}, "mask": []any{s.sc.Codec.Name}}
	}
	r, err := s.ng.Do(ctx, cmd)
	if err != nil {
		return "", 0, err
	}
	trunkOffer, _ := r["sdp"].(string)
	s.log.Debug("ng offer", "call", c.user, "browser_offer", offer, "trunk_offer", trunkOffer)
	ans, err := s.uas.Answer(c.user, []byte(trunkOffer))
	if err != nil {
		return "", 488, fmt.Errorf("trunk UAS: %w", err)
	}
	r, err = s.ng.Do(ctx, map[string]any{
		"command": "answer", "call-id": c.id, "from-tag": "ft" + c.user, "to-tag": "tt" + c.user, "sdp": string(ans),
		"ICE":      "force",
		"DTLS":     "passive",
		"rtcp-mux": []any{"accept"},
		"replace":  []any{"origin", "session-connection"},
	})
	if err != nil {
		return "", 0, err
	}
	browserAnswer, _ := r["sdp"].(string)
	s.log.Debug("ng answer", "call", c.user, "trunk_answer", string(ans), "browser_answer", browserAnswer)
	return browserAnswer, 200, nil
}

// hostAddress puts the host candidate's address into c= and m= of a WebRTC
// offer. Browsers write c=IN IP4 0.0.0.0 and port 9 and rely on ICE; rtpengine
// reads 0.0.0.0 as RFC 2543 hold and would forward the stream sendonly.
func hostAddress(offer string) string {
	var ip, port string
	for _, l := range strings.Split(offer, "\r\n") {
		if f := strings.Fields(l); len(f) >= 8 && strings.HasPrefix(l, "a=candidate:") && f[1] == "1" && f[7] == "host" {
			ip, port = f[4], f[5]
			break
		}
	}
	if ip == "" {
		return offer
	}
	offer = strings.ReplaceAll(offer, "c=IN IP4 0.0.0.0", "c=IN IP4 "+ip)
	return strings.Replace(offer, "m=audio 9 ", "m=audio "+port+" ", 1)
}

func (s *ngSignaler) Teardown(ctx context.Context, c *call) error {
	s.uas.Release(c.user)
	_, err := s.ng.Do(ctx, map[string]any{"command": "delete", "call-id": c.id, "from-tag": "ft" + c.user})
	return err
}

func (s *ngSignaler) Close() { s.ng.Close() }

// rtpengineProc is a userspace-only rtpengine started for the comparison.
type rtpengineProc struct {
	cmd    *exec.Cmd
	ngAddr string
	done   chan struct{}
}

// findRtpengine returns the rtpengine binary, installing Debian's package
// (without starting its service) through install-rtpengine.sh if missing.
func findRtpengine(log *slog.Logger) (string, error) {
	if p, err := exec.LookPath("rtpengine"); err == nil {
		return p, nil
	}
	script := ""
	if root, err := moduleRoot(); err == nil {
		script = filepath.Join(root, "benchmarks", "install-rtpengine.sh")
	}
	if script == "" {
		return "", errors.New("rtpengine not installed and benchmarks/install-rtpengine.sh not found: apt-get install rtpengine-daemon")
	}
	log.Info("installing rtpengine-daemon", "script", script)
	out, err := exec.Command("bash", script).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", script, err, tail(out, 500))
	}
	return exec.LookPath("rtpengine")
}

// startRtpengine runs rtpengine on loopback with its ng port and an RTP port
// range of its own: userspace forwarding only (-t -1: no kernel module), in
// the foreground, with two worker threads, as Debian's rtpengine 10.5 runs
// without its service.
func startRtpengine(ctx context.Context, log *slog.Logger, stderr io.Writer, portMin, portMax int, place *Placement) (*rtpengineProc, error) {
	bin, err := findRtpengine(log)
	if err != nil {
		return nil, err
	}
	ngPort, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	ngAddr := "127.0.0.1:" + strconv.Itoa(ngPort)
	// A media thread per CPU it may use, as mediarelay's media loops are.
	threads := 2
	if place != nil {
		threads = place.RelayCPUs()
	}
	cmd := exec.Command(bin, "--config-file=none", "-t", "-1", "-i", "127.0.0.1", "-n", ngAddr,
		"-m", strconv.Itoa(portMin), "-M", strconv.Itoa(portMax), "-f", "-E", "-L", "4",
		"--delete-delay=0", "--num-threads="+strconv.Itoa(threads))
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := place.Start(cmd); err != nil {
		return nil, fmt.Errorf("start rtpengine: %w", err)
	}
	p := &rtpengineProc{cmd: cmd, ngAddr: ngAddr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	// Ready when it answers ping.
	ng, err := newNGClient(ngAddr)
	if err != nil {
		p.Stop()
		return nil, err
	}
	defer ng.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := ng.Do(pctx, map[string]any{"command": "ping"})
		cancel()
		if err == nil || errors.Is(err, errNGResult) {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("rtpengine exited at start: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("rtpengine not answering ng ping on %s: %w", ngAddr, err)
		}
	}
}

var errNGResult = errors.New("ng result not ok")

// Pid is the rtpengine process id.
func (p *rtpengineProc) Pid() int { return p.cmd.Process.Pid }

// Stop ends the rtpengine this benchmark started (by its PID only).
func (p *rtpengineProc) Stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, fmt.Errorf("find free udp port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// freeUDPPortAt returns the first port in [lo, hi] free on 127.0.0.1.
func freeUDPPortAt(lo, hi int) (int, error) {
	for p := lo; p <= hi; p++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err == nil {
			c.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free udp port in %d-%d", lo, hi)
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free tcp port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
