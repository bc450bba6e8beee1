package signaling

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/dtmf"
)

// info sends an INFO from the trunk's side.
func (u *trunkUAC) info(t *testing.T, ctype, body string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dest := u.dcs.InviteResponse.Contact().Address
	req := sip.NewRequest(sip.INFO, *dest.Clone())
	req.SetBody([]byte(body))
	req.AppendHeader(sip.NewHeader("Content-Type", ctype))
	res, err := u.dcs.Do(ctx, req)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	return int(res.StatusCode)
}

// TestDTMFInfoToBrowser: a digit the trunk sends as SIP INFO reaches the
// browser as RFC 4733 telephone-event packets.
func TestDTMFInfoToBrowser(t *testing.T) {
	_, u, p := answeredCall(t, func(c *config.Config) { c.Media.Timeout = 30 * time.Second })
	p.set(func(p *regPhone) { p.pauseEc = true })
	go u.echoCheck(40) // the trunk's audio clocks the events
	time.Sleep(200 * time.Millisecond)
	if code := u.info(t, "application/dtmf-relay", "Signal=7\r\nDuration=200\r\n"); code != 200 {
		t.Fatalf("INFO answered %d", code)
	}
	if code := u.info(t, "text/plain", "7"); code != 415 {
		t.Fatalf("INFO with an unknown body answered %d, want 415", code)
	}
	var events, ends int
	deadline := time.After(3 * time.Second)
loop:
	for {
		select {
		case pkt := <-p.rx:
			if pkt.PayloadType == 101 && len(pkt.Payload) == 4 {
				if pkt.Payload[0] != 7 {
					t.Fatalf("event %d, want 7", pkt.Payload[0])
				}
				events++
				if pkt.Payload[1]&0x80 != 0 {
					ends++
					if d := binary.BigEndian.Uint16(pkt.Payload[2:]); d != 1600 {
						t.Fatalf("end duration %d, want 1600 (200 ms at 8 kHz)", d)
					}
				}
			}
		case <-deadline:
			break loop
		}
	}
	if events < 8 || ends != 3 {
		t.Fatalf("browser got %d telephone-event packets (%d end), want about 12 with 3 end", events, ends)
	}
	_ = u.bye()
}

// TestDTMFToInfoTrunk: towards a trunk configured with dtmf: info, the
// browser's RFC 4733 events become one INFO per digit (the event packets
// are fed to the call's browser→trunk path, as the forwarder would).
func TestDTMFToInfoTrunk(t *testing.T) {
	r, u, _ := answeredCall(t, func(c *config.Config) {
		c.Media.Timeout = 30 * time.Second
		c.Trunks[len(c.Trunks)-1].DTMF = "info"
	})
	var c *Call
	for _, x := range r.calls.List() {
		c = x
	}
	w := c.media.SIPWriter()
	if _, ok := w.(*dtmf.ToInfo); !ok {
		t.Fatalf("browser→trunk path is %T, want the INFO filter", w)
	}
	// Digit 4 for 100 ms: five updates, then the end packet three times.
	pkt := func(seq uint16, dur uint16, end bool) []byte {
		b := make([]byte, 16)
		b[0], b[1] = 0x80, 101
		binary.BigEndian.PutUint16(b[2:], seq)
		binary.BigEndian.PutUint32(b[4:], 8000)
		binary.BigEndian.PutUint32(b[8:], 42)
		b[12], b[13] = 4, 10
		if end {
			b[13] |= 0x80
		}
		binary.BigEndian.PutUint16(b[14:], dur)
		return b
	}
	for i := 1; i <= 5; i++ {
		_ = w.WriteRTP(pkt(uint16(i), uint16(160*i), false))
	}
	for i := 0; i < 3; i++ {
		_ = w.WriteRTP(pkt(uint16(6+i), 800, true))
	}
	waitFor(t, "INFO at the trunk", 5*time.Second, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.infos) == 1
	})
	time.Sleep(200 * time.Millisecond)
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.infos) != 1 || u.infos[0] != "Signal=4\r\nDuration=100\r\n" {
		t.Fatalf("trunk got INFOs %q", u.infos)
	}
	// Audio still goes as RTP.
	if got := u.echoCheck(20); got < 15 {
		t.Fatalf("only %d of 20 frames came back", got)
	}
}
