package signaling

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// TestInviteFloodLimited: an INVITE flood from one source gets 503 with
// Retry-After past its rate and silence past the reply rate, counted in
// /metrics, while a browser on another source calls a trunk.
func TestInviteFloodLimited(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, chain(withTrunk(u, mediaplan.ModeAuto, "PCMU"), func(c *config.Config) {
		c.SIP.InviteRate, c.SIP.InviteBurst = 2, 5
		c.SIP.OverloadReplyRate = 2
	}))
	flood, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	defer flood.Close()
	relay := r.SIPUDPAddr()
	const n = 200
	for i := range n {
		msg := fmt.Sprintf("INVITE sip:+15551234567@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=z9hG4bKflood%d\r\n"+
			"From: <sip:x@127.0.0.2>;tag=f%d\r\nTo: <sip:+15551234567@%s>\r\nCall-ID: flood-%d\r\nCSeq: 1 INVITE\r\n"+
			"Contact: <sip:x@%s>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			relay, flood.LocalAddr(), i, i, relay, i, flood.LocalAddr())
		if _, err := flood.WriteTo([]byte(msg), relay); err != nil {
			t.Fatal(err)
		}
	}
	codes := map[int]int{}
	seen := map[string]bool{} // final responses are retransmitted until ACKed
	buf := make([]byte, 65535)
	for {
		_ = flood.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := flood.ReadFrom(buf)
		if err != nil {
			break
		}
		m, err := sip.ParseMessage(buf[:k])
		if err != nil {
			continue
		}
		if res, ok := m.(*sip.Response); ok && res.StatusCode >= 200 && !seen[res.CallID().Value()] {
			seen[res.CallID().Value()] = true
			codes[int(res.StatusCode)]++
			if res.StatusCode == 503 && res.GetHeader("Retry-After") == nil {
				t.Error("503 without Retry-After")
			}
		}
	}
	answered := 0
	for _, c := range codes {
		answered += c
	}
	t.Logf("flood of %d INVITEs: final responses by code (distinct calls) %v", n, codes)
	if codes[503] == 0 || answered >= n {
		t.Fatalf("flood not limited: %v", codes)
	}
	if u.trunkInvites() != 0 {
		t.Fatal("the flood reached the trunk")
	}

	p := newPhone(t, "PCMU")
	p.call(r, "+15551234567") // another source, during the flood's aftermath
	p.hangup()

	text := metricsText(t, r)
	if v := metricValue(text, "mediarelay_sip_throttled_total", `method="INVITE",action="503"`); v != float64(codes[503]) {
		t.Errorf("503s counted %v, sent %d", v, codes[503])
	}
	if v := metricValue(text, "mediarelay_sip_throttled_total", `method="INVITE",action="dropped"`); v < 1 {
		t.Error("dropped INVITEs not counted")
	}
	if !strings.Contains(text, "mediarelay_sip_throttled_total") {
		t.Error("no throttling metric")
	}
}
