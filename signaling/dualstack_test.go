package signaling

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestDualStack: a relay bound to the IPv6 wildcard with one public
// address per family serves an IPv4 browser calling an IPv4 trunk and an
// IPv6 browser calling an IPv6 trunk at once: each browser gets
// candidates for both families, each trunk an SDP address of its own
// family, and the audio of both calls echoes back byte for byte. It runs
// in a network namespace of its own, where the wildcard reaches only lo.
func TestDualStack(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	u4, u6 := newTrunkUASAt(t, "127.0.0.1"), newTrunkUASAt(t, "::1")
	r := startRelay(t, func(c *config.Config) {
		c.SIP.UDPListen, c.SIP.TCPListen = "[::]:0", "[::]:0"
		c.Media.BindIP = "::"
		c.Media.PublicIP = "127.0.0.1,::1"
		c.Trunks = []config.Trunk{
			{Name: "v4", Match: "^4", Address: "sip:" + u4.addr, Transport: "udp", Codecs: []string{"PCMU"}, MediaMode: mediaplan.ModeAuto},
			{Name: "v6", Match: "^6", Address: "sip:" + u6.addr, Transport: "udp", Codecs: []string{"PCMU"}, MediaMode: mediaplan.ModeAuto},
		}
	})
	for _, tc := range []struct {
		name    string
		network webrtc.NetworkType
		user    string
		trunk   *trunkUAS
		conn    string
	}{
		{"ipv4", webrtc.NetworkTypeUDP4, "4000", u4, "c=IN IP4 127.0.0.1"},
		{"ipv6", webrtc.NetworkTypeUDP6, "6000", u6, "c=IN IP6 ::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPhoneOn(t, tc.network, "PCMU")
			p.call(r, tc.user)
			answer := p.pc.RemoteDescription().SDP
			for _, addr := range []string{"127.0.0.1", "::1"} {
				found := false
				for _, l := range strings.Split(answer, "\r\n") {
					f := strings.Fields(l)
					found = found || (len(f) > 4 && strings.HasPrefix(f[0], "a=candidate:") && f[2] == "udp" && f[4] == addr)
				}
				if !found {
					t.Errorf("the browser's answer has no UDP candidate on %s:\n%s", addr, answer)
				}
			}
			want := "udp" + tc.name[3:]
			for _, c := range r.calls.List() {
				if l := liveWebLeg(c); l != nil && l.Transport() != want {
					t.Errorf("the WebRTC leg runs over %q, want %s", l.Transport(), want)
				}
			}
			if o := tc.trunk.lastOffer.Load(); o == nil || !strings.Contains(*o, tc.conn) {
				t.Errorf("the trunk's offer lacks %q: %v", tc.conn, o)
			}
			expectEcho(t, p, 100)
			p.hangup()
			select {
			case <-tc.trunk.byes:
			case <-time.After(5 * time.Second):
				t.Fatal("trunk never got the BYE")
			}
			waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
}
