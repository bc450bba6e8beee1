package signaling

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// TestIPv6Call: with the relay's SIP and media on ::1, a pion client
// whose ICE uses only UDP over IPv6 calls a trunk on ::1: the WebRTC leg
// runs over udp6, the trunk gets c=IN IP6 from the relay, and the audio
// echoes back byte for byte.
func TestIPv6Call(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		// A host without ::1 cannot run this; CI's can, so there it fails.
		if os.Getenv("CI") != "" {
			t.Fatalf("no IPv6 loopback: %v", err)
		}
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		_ = c.Close()
	}
	u := newTrunkUASAt(t, "::1")
	r := startRelay(t, func(c *config.Config) {
		c.SIP.UDPListen = "[::1]:0"
		c.SIP.TCPListen = "[::1]:0"
		c.Media.BindIP = "::1"
		withTrunk(u, mediaplan.ModeAuto, "PCMU")(c)
	})
	p := newPhoneOn(t, webrtc.NetworkTypeUDP6, "PCMU")
	p.call(r, "1000")
	id := activeCallID(t, r)
	var leg string
	for _, c := range r.calls.List() {
		if l := liveWebLeg(c); l != nil {
			leg = l.Transport()
		}
	}
	if leg != "udp6" {
		t.Errorf("the WebRTC leg runs over %q, want udp6", leg)
	}
	if o := u.lastOffer.Load(); o == nil || !strings.Contains(*o, "c=IN IP6 ::1") {
		t.Errorf("the trunk's offer has no IPv6 connection line: %v", o)
	}
	expectEcho(t, p, 100)
	p.hangup()
	select {
	case <-u.byes:
	case <-time.After(5 * time.Second):
		t.Fatal("trunk never got the BYE")
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	// The CDR and the metrics say how each leg's media went.
	rec := callRecord(t, r, id)
	if rec.WebRTCTransport != "udp6" || rec.SIPTransport != "udp6" {
		t.Errorf("CDR transports webrtc %q sip %q, want udp6 both", rec.WebRTCTransport, rec.SIPTransport)
	}
	text := metricsText(t, r)
	for _, leg := range []string{`leg="webrtc",transport="udp6"`, `leg="sip",transport="udp6"`} {
		if v := metricValue(text, "mediarelay_leg_transports_total", leg); v != 1 {
			t.Errorf("mediarelay_leg_transports_total{%s} = %v, want 1", leg, v)
		}
	}
}
