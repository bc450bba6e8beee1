package signaling

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// ula is the IPv6 address TestBrowserIPv6 gives its namespace: Chromium
// gathers no candidate on a loopback interface, ::1 included, so the
// browser needs an address on an interface of another kind.
const ula = "fd00:6d72::1"

// TestBrowserIPv6: in a network namespace of its own whose only IPv6
// address (besides ::1) is a unique local one on a veth interface,
// headless Chromium loads the softphone from [::1] and calls an echo trunk
// with the relay's SIP, WebRTC port and trunk all on the ULA: its
// tones come back, and the call's WebRTC leg and SIP leg both run over
// udp6. Nothing leaves the namespace.
func TestBrowserIPv6(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	for _, args := range [][]string{
		// A veth pair with both ends in this namespace: the kernel
		// here has no dummy interfaces.
		{"link", "add", "mr6", "type", "veth", "peer", "name", "mr6peer"},
		{"link", "set", "mr6", "up"},
		{"link", "set", "mr6peer", "up"},
		{"-6", "addr", "add", ula + "/64", "dev", "mr6", "nodad"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if c, err := net.ListenPacket("udp6", "["+ula+"]:0"); err != nil {
		t.Fatalf("no IPv6 in the test's namespace: %v", err)
	} else {
		_ = c.Close()
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
	u := newTrunkUASAt(t, ula)
	r := startRelay(t, func(c *config.Config) {
		// The page stays on ::1, where it is a secure context
		// (getUserMedia); the media is on the ULA.
		c.HTTP.Listen = "[::1]:0"
		c.SIP.UDPListen = "[" + ula + "]:0"
		c.SIP.TCPListen = "[" + ula + "]:0"
		c.Media.BindIP = ula
		withTrunk(u, mediaplan.ModeAuto, "PCMU")(c)
	})

	watch := watchWebTransports(r)
	res, err := browser.Call(ctx, browsertest.Options{
		PageURL: "http://" + r.HTTPAddr().String() + "/", Target: "sip:1000@example.com", Hold: 4 * time.Second, Freqs: append(tones, quiet),
	})
	seen := watch()
	if err != nil {
		t.Fatalf("call: %v (log: %v)", err, res.Log)
	}
	tonesCameBack(t, res, tones, quiet)
	if !seen["udp6"] || seen["udp4"] {
		t.Errorf("the call's WebRTC leg used %v, want udp6 only", keys(seen))
	}
	if o := u.lastOffer.Load(); o == nil || !strings.Contains(*o, "c=IN IP6 "+ula) {
		t.Errorf("the trunk's offer has no IPv6 connection line: %v", o)
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}
