// Package browsertest places calls from a real browser — Debian's headless
// Chromium driven by playwright-core — through the softphone page of
// signaling/web, for tests anywhere in the module.
//
// A test typically looks like this:
//
//	func TestBrowserEcho(t *testing.T) {
//		if !browsertest.InNetns(t) {
//			return // the parent: the child already ran the test body
//		}
//		// ... start a relay on 127.0.0.1 ...
//		wav := filepath.Join(t.TempDir(), "mic.wav")
//		browsertest.WriteToneWAV(wav, []float64{400, 1000}, 2)
//		res, err := browsertest.Call(ctx, browsertest.Options{
//			PageURL: "http://127.0.0.1:8080/", Target: "sip:echo@127.0.0.1",
//			WAV: wav, Hold: 3 * time.Second, Freqs: []float64{400, 1000},
//		})
//		// ... assert on res.ToneDB ...
//	}
//
// For several calls, Launch one Browser and use its Call method: Chromium's
// start costs seconds on a busy machine. The package is for tests (it
// imports testing).
//
// The node side (run.mjs, package.json) lives in this package's source
// directory; its node_modules is installed there by .ci/deps, or by
// EnsureDeps on first use.
package browsertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DirEnv names an environment variable that overrides where run.mjs and
// package.json are looked for; by default it is this package's source
// directory, which is found from the build's file paths (so -trimpath
// builds need the variable).
const DirEnv = "MEDIARELAY_BROWSERTEST_DIR"

// netnsEnv marks the re-executed test binary; its value is the test's name.
const netnsEnv = "MEDIARELAY_BROWSERTEST_NETNS"

// Chromium is the browser binary that run.mjs launches.
const Chromium = "/usr/bin/chromium"

// Options describe one browser call.
type Options struct {
	// PageURL is the softphone page to open. The page connects to
	// ws(s)://<its host>/ws unless the URL carries ?ws=<websocket URL>.
	PageURL string
	// Target is the SIP URI to call; empty means the page's default,
	// sip:echo@<page host>.
	Target string
	// WAV is the fake microphone for the package-level Call: a 16-bit PCM
	// WAV file that Chromium loops (see WriteToneWAV); empty means
	// Chromium's built-in beeps. Browser.Call ignores it (see Launch).
	WAV string
	// Hold is how long to stay in the call once media flows; 0 means 3 s.
	Hold time.Duration
	// Freqs are the frequencies, in Hz, whose levels in the received audio
	// are reported in Result.ToneDB.
	Freqs []float64
	// DTMF, if not empty, is sent as RFC 4733 events one second into the call.
	DTMF string
	// CancelWhenRinging makes the browser hang up as soon as a 180 or 183
	// arrives (a CANCEL) instead of waiting for the answer; Call then
	// succeeds if the CANCEL ended the call with a 487 (Result.HungUp).
	CancelWhenRinging bool
	// Answer makes the page register as User (answering a digest challenge
	// with Password) and wait for an incoming call instead of calling
	// Target; it answers, holds, measures and hangs up as for an outgoing
	// call. Start the call towards the browser once the registration is in.
	Answer   bool
	User     string
	Password string
	// Timeout bounds the call in the browser, from opening the page to the
	// hang-up; 0 means Hold + 45 s.
	Timeout time.Duration
}

// Result is what the browser saw.
type Result struct {
	// Established reports that the INVITE got a 2xx and the SDP answer was accepted.
	Established bool
	// MediaConnected reports that ICE and DTLS completed (connectionState "connected").
	MediaConnected bool
	// Code and Reason are the INVITE's final (or last) status; Code is 0
	// for a failure before any response (no WebSocket, no microphone).
	Code   int
	Reason string
	// ToneDB maps each of Options.Freqs to the level of the received audio
	// at it, averaged over the call, in dB above the noise floor (the
	// median level over 100-3800 Hz). A steady tone that came back stands
	// tens of dB out; a frequency nobody sent sits near 0. A frequency for
	// which nothing was measured is absent.
	ToneDB map[float64]float64
	// DTMFSent reports that the page could queue Options.DTMF on its sender.
	DTMFSent bool
	// HungUp reports that our BYE (or CANCEL) was answered with success.
	HungUp bool
	// EndedBy is "local" or "remote" once the call is over.
	EndedBy string
	// Stats is the page's last getStats() summary (packets, codec, jitter).
	// A page with refreshStats() (the JsSIP and SIP.js pages, see
	// pagekit.js) refreshes it at the end of the hold, so its
	// packetsReceived covers the whole call.
	Stats map[string]any
	// Timing holds the first-audio marks of a page that keeps them (see
	// pagekit.js); it is nil for one that does not.
	Timing *Timing
	// RelayMode is the media mode the relay's 200 OK named (the built-in
	// page, calls it placed), and CallInfo the page's call panel as shown
	// (codec, mode, rtt, loss, jitter); both are empty for other pages.
	RelayMode string
	CallInfo  map[string]string
	// Log holds the page's and run.mjs's log lines, for failure reports.
	Log []string
}

// Timing is when, in the page's clock (milliseconds), the call's ACK was
// received (answered call) or sent (placed call), the media connected
// (ICE and DTLS), and the first inbound RTP packet showed in getStats().
// A mark the page did not reach is nil.
type Timing struct {
	ACK       *float64 `json:"ack"`
	Connected *float64 `json:"connected"`
	FirstRTP  *float64 `json:"firstRtp"`
}

// SinceACK is how long after the ACK a mark of t (Connected, FirstRTP)
// was reached, negative if before, and false if either mark is missing.
// FirstRTP is a few milliseconds late at most: the page polls getStats().
func (t *Timing) SinceACK(mark *float64) (time.Duration, bool) {
	if t == nil || t.ACK == nil || mark == nil {
		return 0, false
	}
	return time.Duration((*mark - *t.ACK) * float64(time.Millisecond)), true
}

// wireResult is run.mjs's JSON line.
type wireResult struct {
	Established    bool               `json:"established"`
	MediaConnected bool               `json:"mediaConnected"`
	Code           int                `json:"code"`
	Reason         string             `json:"reason"`
	ToneDB         map[string]float64 `json:"toneDB"`
	DTMFSent       bool               `json:"dtmfSent"`
	HungUp         bool               `json:"hungUp"`
	EndedBy        string             `json:"endedBy"`
	Stats          map[string]any     `json:"stats"`
	Timing         *Timing            `json:"timing"`
	RelayMode      string             `json:"relayMode"`
	CallInfo       map[string]string  `json:"callInfo"`
	Log            []string           `json:"log"`
	Error          string             `json:"error"`
}

// wireOptions is one call's request line to run.mjs --serve.
type wireOptions struct {
	PageURL   string    `json:"pageUrl"`
	Target    string    `json:"target,omitempty"`
	HoldMs    int64     `json:"holdMs"`
	Freqs     []float64 `json:"freqs"`
	DTMF      string    `json:"dtmf,omitempty"`
	Cancel    bool      `json:"cancel,omitempty"`
	Answer    bool      `json:"answer,omitempty"`
	User      string    `json:"user,omitempty"`
	Password  string    `json:"password,omitempty"`
	TimeoutMs int64     `json:"timeoutMs"`
}

// Call launches headless Chromium with o.WAV as its microphone, places one
// call (see Browser.Call) and closes the browser. For several calls, Launch
// one Browser and reuse it: Chromium's start takes seconds on a busy machine.
func Call(ctx context.Context, o Options) (Result, error) {
	b, err := Launch(ctx, o.WAV)
	if err != nil {
		return Result{}, err
	}
	res, err := b.Call(ctx, o)
	if cerr := b.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return res, err
}

// Browser is a running headless Chromium (driven by run.mjs --serve) that
// places calls one after another, each in a fresh tab.
type Browser struct {
	mu      sync.Mutex // one call at a time
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	results chan []byte // run.mjs's result lines; closed when its stdout ends
	stderr  *lockedBuffer
	closed  bool
}

// Launch starts Chromium, with wav (a 16-bit PCM WAV file, looped; see
// WriteToneWAV) as its fake microphone, or Chromium's built-in beeps if wav
// is empty. The browser lives until Close or until ctx is done.
func Launch(ctx context.Context, wav string) (*Browser, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	if err := EnsureDeps(ctx); err != nil {
		return nil, err
	}
	if wav != "" {
		if wav, err = filepath.Abs(wav); err != nil {
			return nil, err
		}
		if _, err := os.Stat(wav); err != nil {
			return nil, fmt.Errorf("browsertest: microphone file: %w", err)
		}
	}
	launch, err := json.Marshal(map[string]string{"wav": wav, "chromium": Chromium})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "run.mjs"), "--serve", string(launch))
	cmd.Dir = dir
	b := &Browser{cmd: cmd, results: make(chan []byte), stderr: &lockedBuffer{}}
	cmd.Stderr = b.stderr
	// Own process group, so killing it also takes Chromium and its helpers down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if b.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("browsertest: starting node: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 16<<20) // a result carries the page's whole log
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); bytes.HasPrefix(line, []byte("{")) {
				b.results <- bytes.Clone(line)
			}
		}
		close(b.results)
	}()
	return b, nil
}

// Call opens o.PageURL in a new tab, calls o.Target, stays in the call for
// o.Hold, measures the received tones, hangs up and reports. o.WAV is
// ignored: the microphone was chosen at Launch.
//
// The error is non-nil when the call was not established, media did not
// connect, or the hang-up was not acknowledged (with CancelWhenRinging:
// when the call did not ring or the CANCEL did not bring a 487); the
// Result is still filled in as far as the browser got, so a test that
// expects a rejection (say, 404) can ignore the error and check
// Result.Code. If the browser itself fails or hangs, it is killed and
// later calls fail too.
func (b *Browser) Call(ctx context.Context, o Options) (Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Result{}, errors.New("browsertest: browser is closed")
	}
	if o.PageURL == "" {
		return Result{}, errors.New("browsertest: Options.PageURL is empty")
	}
	if o.Hold <= 0 {
		o.Hold = 3 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = o.Hold + 45*time.Second
	}
	req, err := json.Marshal(wireOptions{
		PageURL:   o.PageURL,
		Target:    o.Target,
		HoldMs:    o.Hold.Milliseconds(),
		Freqs:     o.Freqs,
		DTMF:      o.DTMF,
		Cancel:    o.CancelWhenRinging,
		Answer:    o.Answer,
		User:      o.User,
		Password:  o.Password,
		TimeoutMs: o.Timeout.Milliseconds(),
	})
	if err != nil {
		return Result{}, err
	}
	if _, err := b.stdin.Write(append(req, '\n')); err != nil {
		return Result{}, fmt.Errorf("browsertest: browser gone: %v: %s", err, tail(b.stderr.String(), 2000))
	}

	// run.mjs enforces o.Timeout itself, and a first call also waits for
	// Chromium to start; past that margin the browser is wedged.
	backstop := time.NewTimer(o.Timeout + 75*time.Second)
	defer backstop.Stop()
	var line []byte
	var ok bool
	select {
	case line, ok = <-b.results:
		if !ok {
			err := b.cmd.Wait()
			b.closed = true
			return Result{}, fmt.Errorf("browsertest: browser exited (%v): %s", err, tail(b.stderr.String(), 2000))
		}
	case <-ctx.Done():
		b.kill()
		return Result{}, fmt.Errorf("browsertest: %w", ctx.Err())
	case <-backstop.C:
		b.kill()
		return Result{}, fmt.Errorf("browsertest: no result from the browser within %v: %s", o.Timeout+75*time.Second, tail(b.stderr.String(), 2000))
	}

	var w wireResult
	if err := json.Unmarshal(line, &w); err != nil {
		return Result{}, fmt.Errorf("browsertest: bad result line %q: %v", line, err)
	}
	res := Result{
		Established:    w.Established,
		MediaConnected: w.MediaConnected,
		Code:           w.Code,
		Reason:         w.Reason,
		ToneDB:         map[float64]float64{},
		DTMFSent:       w.DTMFSent,
		HungUp:         w.HungUp,
		EndedBy:        w.EndedBy,
		Stats:          w.Stats,
		Timing:         w.Timing,
		RelayMode:      w.RelayMode,
		CallInfo:       w.CallInfo,
		Log:            w.Log,
	}
	for k, v := range w.ToneDB {
		if f, err := strconv.ParseFloat(k, 64); err == nil {
			res.ToneDB[f] = v
		}
	}
	if w.Error != "" {
		return res, fmt.Errorf("browsertest: %s", w.Error)
	}
	return res, nil
}

// Close ends the browser and waits for it to exit.
func (b *Browser) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.stdin.Close() // run.mjs closes Chromium and exits at the end of its input
	// run.mjs bounds its own shutdown; this is the backstop if it hangs.
	stuck := time.AfterFunc(30*time.Second, func() { _ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL) })
	defer stuck.Stop()
	for range b.results {
	}
	err := b.cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		// Exit status 1 only says some call failed, which Call has reported.
		if exit.ExitCode() == 1 {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("browsertest: browser: %v: %s", err, tail(b.stderr.String(), 2000))
	}
	return nil
}

func (b *Browser) kill() {
	if b.closed {
		return
	}
	b.closed = true
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	b.stdin.Close()
	for range b.results {
	}
	_ = b.cmd.Wait()
}

// lockedBuffer collects a child's stderr while others read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Dir returns the directory holding run.mjs and package.json.
func Dir() (string, error) {
	if d := os.Getenv(DirEnv); d != "" {
		return d, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if ok {
		d := filepath.Dir(file)
		if _, err := os.Stat(filepath.Join(d, "run.mjs")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("browsertest: cannot find run.mjs next to the package source; set %s", DirEnv)
}

// EnsureDeps installs the node dependencies (playwright-core, no browser
// download; esbuild and SIP.js for the SIP.js test page) into
// Dir()/node_modules unless they are all there. It needs the
// npm registry, so call it before entering a network namespace; InNetns
// does.
func EnsureDeps(ctx context.Context) error {
	dir, err := Dir()
	if err != nil {
		return err
	}
	if depsInstalled(dir) {
		return nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return errors.New("browsertest: npm not found; run .ci/deps to install node and the browser")
	}
	// Several test binaries may get here at once; one installs, the others wait.
	lock, err := os.OpenFile(filepath.Join(dir, ".npm-install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if depsInstalled(dir) {
		return nil
	}
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--silent")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("browsertest: npm install in %s: %v\n%s", dir, err, out)
	}
	return nil
}

// depsInstalled reports whether every dependency in dir's package.json
// is in its node_modules (a checkout may predate one added later).
func depsInstalled(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return false
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if json.Unmarshal(b, &pkg) != nil {
		return false
	}
	for name := range pkg.Dependencies {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", name, "package.json")); err != nil {
			return false
		}
	}
	return true
}

// Esbuild is the esbuild binary this package's package.json installs
// (EnsureDeps), for tests that bundle a page.
func Esbuild() (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "node_modules", ".bin", "esbuild"), nil
}

// InNetns re-executes the running test inside a fresh network namespace
// that has only lo (unshare -n, ip link set lo up), because Chromium picks
// non-loopback interfaces for WebRTC otherwise.
//
// It returns true in the child, where the test body goes on, and false in
// the parent, which has already waited for the child and reported its
// result and output through t; the caller returns at once. As root it uses
// a plain network namespace; otherwise it tries a user namespace (unshare
// -r), and skips the test only if that is impossible too.
//
// Everything the test body needs must be started in the child, after
// InNetns returns true: the parent's sockets are in another namespace.
func InNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		return true
	}
	if err := EnsureDeps(context.Background()); err != nil {
		t.Fatal(err)
	}
	unshare, err := unshareArgs()
	if err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("cannot create a network namespace as root: %v", err)
		}
		t.Skipf("browser test needs a network namespace with only lo, and this user cannot make one (not root, and no user namespaces): %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	args := append(unshare, "--", "/bin/sh", "-c", `ip link set lo up && exec "$@"`, "sh", exe,
		"-test.run="+runPattern(t.Name(), flagValue("test.run")), "-test.v=true", "-test.count=1")
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	text := string(out)
	t.Logf("output of %s in a network namespace:\n%s", t.Name(), text)

	switch {
	case err != nil:
		t.Errorf("%s failed in its network namespace: %v", t.Name(), err)
	case strings.Contains(text, "--- SKIP: "+t.Name()+" "):
		t.Skip("skipped in the network namespace (see output above)")
	case !strings.Contains(text, "--- PASS: "+t.Name()+" "):
		t.Errorf("%s did not run in its network namespace (see output above)", t.Name())
	}
	return false
}

// unshareArgs returns the unshare flags that work here: -n as root, -r -n
// (a user namespace mapping us to root) otherwise.
func unshareArgs() ([]string, error) {
	try := [][]string{{"-n"}}
	if os.Geteuid() != 0 {
		try = [][]string{{"-r", "-n"}}
	}
	var errs []error
	for _, a := range try {
		out, err := exec.Command("unshare", append(a, "--", "ip", "link", "set", "lo", "up")...).CombinedOutput()
		if err == nil {
			return a, nil
		}
		errs = append(errs, fmt.Errorf("unshare %s: %v: %s", strings.Join(a, " "), err, bytes.TrimSpace(out)))
	}
	return nil, errors.Join(errs...)
}

// runPattern matches exactly the named test, level by level, and keeps the
// subtest levels of the parent's own -run pattern (so that -run
// TestX/opus still picks only that subtest in the child).
func runPattern(name, parentRun string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	if levels := strings.Split(parentRun, "/"); len(levels) > len(parts) {
		parts = append(parts, levels[len(parts):]...)
	}
	return strings.Join(parts, "/")
}

// flagValue returns a command-line flag's value, or "" if it is not defined.
func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// WriteToneWAV writes a 48 kHz, 16-bit, mono PCM WAV file of the given
// length holding the sum of equal-amplitude sines at freqs (peak about
// -6 dBFS in total), for Options.WAV. Chromium loops the file, so choose a
// length holding whole cycles of every tone (1 s does for whole-Hz
// frequencies) to keep the loop point click-free.
func WriteToneWAV(path string, freqs []float64, seconds float64) error {
	const rate = 48000
	if len(freqs) == 0 || seconds <= 0 {
		return errors.New("browsertest: WriteToneWAV needs frequencies and a positive length")
	}
	n := int(seconds * rate)
	amp := 0.5 * 32767 / float64(len(freqs))
	data := make([]byte, 44+2*n)
	le := binary.LittleEndian
	copy(data[0:], "RIFF")
	le.PutUint32(data[4:], uint32(36+2*n))
	copy(data[8:], "WAVEfmt ")
	le.PutUint32(data[16:], 16) // fmt chunk size
	le.PutUint16(data[20:], 1)  // PCM
	le.PutUint16(data[22:], 1)  // mono
	le.PutUint32(data[24:], rate)
	le.PutUint32(data[28:], rate*2) // byte rate
	le.PutUint16(data[32:], 2)      // block align
	le.PutUint16(data[34:], 16)     // bits per sample
	copy(data[36:], "data")
	le.PutUint32(data[40:], uint32(2*n))
	for i := 0; i < n; i++ {
		var v float64
		for _, f := range freqs {
			v += math.Sin(2 * math.Pi * f * float64(i) / rate)
		}
		le.PutUint16(data[44+2*i:], uint16(int16(math.Round(v*amp))))
	}
	return os.WriteFile(path, data, 0o644)
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
