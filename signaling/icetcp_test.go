package signaling

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestBrowserICETCP: headless Chromium in a network namespace where UDP to
// the relay's WebRTC port is dropped (iptables) still calls the echo over
// ICE-TCP, and its tones come back; with UDP allowed again, the same call
// uses UDP.
func TestBrowserICETCP(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables is not installed (.ci/deps installs it)")
	}
	tones, quiet := []float64{400, 1000}, 2500.0
	wav := filepath.Join(t.TempDir(), "tones.wav")
	if err := browsertest.WriteToneWAV(wav, tones, 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	r := startRelay(t, nil)
	if r.webrtc.TCPAddr() == nil {
		t.Fatal("the relay offers no ICE-TCP")
	}
	udpPort := strconv.Itoa(r.webrtc.LocalAddr().(*net.UDPAddr).Port)
	rule := []string{"OUTPUT", "-p", "udp", "--dport", udpPort, "-j", "DROP"}

	call := func(t *testing.T) map[string]bool {
		seen := watchWebTransports(r)
		res, err := browser.Call(ctx, browsertest.Options{
			PageURL: "http://" + r.HTTPAddr().String() + "/", Target: "sip:echo@127.0.0.1", Hold: 4 * time.Second, Freqs: append(tones, quiet),
		})
		transports := seen()
		if err != nil {
			t.Fatalf("call: %v (log: %v)", err, res.Log)
		}
		t.Logf("transports %v", transports)
		tonesCameBack(t, res, tones, quiet)
		waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		return transports
	}

	t.Run("udp blocked", func(t *testing.T) {
		iptables(t, append([]string{"-A"}, rule...)...)
		defer iptables(t, append([]string{"-D"}, rule...)...)
		if seen := call(t); !seen["tcp4"] || seen["udp4"] {
			t.Errorf("with UDP to the WebRTC port dropped the call used %v, want tcp4 only", keys(seen))
		}
	})
	t.Run("udp allowed", func(t *testing.T) {
		if seen := call(t); !seen["udp4"] {
			t.Errorf("with UDP allowed the call used %v, want udp4", keys(seen))
		}
	})
	// The metrics say so too, one call each.
	text := metricsText(t, r)
	for _, leg := range []string{`leg="webrtc",transport="tcp4"`, `leg="webrtc",transport="udp4"`} {
		if v := metricValue(text, "mediarelay_leg_transports_total", leg); v != 1 {
			t.Errorf("mediarelay_leg_transports_total{%s} = %v, want 1", leg, v)
		}
	}
}

func iptables(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// watchWebTransports notes the transport of every call's WebRTC leg while
// a browser holds its call; the returned function stops watching and says
// what was seen.
func watchWebTransports(r *Relay) func() map[string]bool {
	seen := map[string]bool{}
	var mu sync.Mutex
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, c := range r.calls.List() {
				if l := liveWebLeg(c); l != nil {
					if tr := l.Transport(); tr != "" {
						mu.Lock()
						seen[tr] = true
						mu.Unlock()
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() map[string]bool {
		close(stop)
		<-done
		return seen
	}
}

// tonesCameBack checks that the browser heard each of its tones back, well
// above the level of a frequency nobody sent.
func tonesCameBack(t *testing.T, res browsertest.Result, tones []float64, quiet float64) {
	t.Helper()
	t.Logf("tone levels (dB over noise floor): %v", res.ToneDB)
	floor := res.ToneDB[quiet]
	for _, f := range tones {
		if db := res.ToneDB[f]; db < 20 || db < floor+15 {
			t.Errorf("%v Hz came back at %.1f dB (quiet %v Hz at %.1f dB): not detected", f, db, quiet, floor)
		}
	}
}

func keys(m map[string]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return fmt.Sprint(ks)
}

// liveWebLeg is the call's WebRTC leg once its media has started, nil
// before: the leg accessors may be used from another goroutine only then
// (Media.Started), and a call still being set up has none.
func liveWebLeg(c *Call) *media.WebRTCLeg {
	if !c.media.Started() {
		return nil
	}
	return c.media.Web()
}
