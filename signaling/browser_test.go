package signaling

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/mediarelay/mediarelay/pkg/config"

	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// TestBrowser loads the relay's own softphone page in headless Chromium,
// whose fake microphone plays 400 Hz and 1 kHz, and checks the tones come
// back: from the built-in echo (Opus passthrough), and through a trunk that
// only speaks PCMU, passed through (Chromium offers PCMU) and, with the
// trunk's media mode set to transcode, as Opus ↔ PCMU both ways.
func TestBrowser(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
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

	u := newTrunkUAS(t)
	u.setCapture(make(chan []byte, 4000))
	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "pcmu-auto", Match: "^1", Address: "sip:" + u.addr, Codecs: []string{"PCMU"}, MediaMode: mediaplan.ModeAuto},
			{Name: "pcmu-transcode", Match: "^2", Address: "sip:" + u.addr, Codecs: []string{"PCMU"}, MediaMode: mediaplan.ModeTranscode},
		}
	})
	modes := map[string]uint64{}
	page := "http://" + r.HTTPAddr().String() + "/"
	for _, tc := range []struct{ name, target, mode string }{
		{"echo", "sip:echo@127.0.0.1", mediaplan.ModePassthrough},
		{"pcmu-trunk", "sip:1555@127.0.0.1", mediaplan.ModePassthrough}, // Chromium offers PCMU too
		{"pcmu-trunk-transcoded", "sip:2555@127.0.0.1", mediaplan.ModeTranscode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for len(u.capture) > 0 {
				<-u.capture
			}
			res, err := browser.Call(ctx, browsertest.Options{
				PageURL: page, Target: tc.target, Hold: 4 * time.Second, Freqs: append(tones, quiet), DTMF: "1#",
			})
			if err != nil {
				t.Fatalf("call: %v (log: %v)", err, res.Log)
			}
			t.Logf("tone levels (dB over noise floor): %v", res.ToneDB)
			floor := res.ToneDB[quiet]
			for _, f := range tones {
				if db := res.ToneDB[f]; db < 20 || db < floor+15 {
					t.Errorf("%v Hz came back at %.1f dB (quiet %v Hz at %.1f dB): not detected", f, db, quiet, floor)
				}
			}
			t.Logf("the page's call panel: %v", res.CallInfo)
			// The page shows the call: the mode the relay named, a codec,
			// and round-trip time, loss and jitter from getStats().
			if res.RelayMode != tc.mode || res.CallInfo["mode"] != tc.mode {
				t.Errorf("the page says mode %q (panel %q), the relay used %s", res.RelayMode, res.CallInfo["mode"], tc.mode)
			}
			for _, k := range []string{"codec", "rtt", "loss", "jitter"} {
				if v := res.CallInfo[k]; v == "" || v == "–" {
					t.Errorf("the page's call panel shows no %s: %q", k, res.CallInfo)
				}
			}
			before := modes[tc.mode]
			modes[tc.mode] = sumCounter(t, r.m.TranscodedCalls, "mode", tc.mode)
			if modes[tc.mode] != before+1 {
				t.Errorf("the call did not run in mode %s", tc.mode)
			}
			if tc.name != "echo" {
				checkDTMFAtTrunk(t, u.capture, []byte{1, 11})
			}
			waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
		})
	}
	n, err := r.CDR().Count(ctx)
	if err != nil || n != 3 {
		t.Fatalf("cdr rows: %d, %v", n, err)
	}
}

// checkDTMFAtTrunk reads what the trunk received and checks that the digits
// arrived as RFC 4733 telephone-event at the SIP leg's 8 kHz clock: payload
// type 101 as offered, each event ended, and durations plausible at 8 kHz
// (a browser's 100 ms tone is 800 units; at 48 kHz it would be 4800).
func checkDTMFAtTrunk(t *testing.T, capture chan []byte, digits []byte) {
	t.Helper()
	ended := map[byte]uint16{}
	for len(capture) > 0 {
		var pkt rtp.Packet
		if pkt.Unmarshal(<-capture) != nil || pkt.PayloadType != 101 || len(pkt.Payload) < 4 {
			continue
		}
		if pkt.Payload[1]&0x80 != 0 {
			ended[pkt.Payload[0]] = binary.BigEndian.Uint16(pkt.Payload[2:4])
		}
	}
	for _, d := range digits {
		dur, ok := ended[d]
		switch {
		case !ok:
			t.Errorf("DTMF event %d never ended at the trunk (got %v)", d, ended)
		case dur < 320 || dur > 4000:
			t.Errorf("DTMF event %d lasted %d units: not an 8 kHz duration", d, dur)
		}
	}
}

// TestBrowserCallAuth: the softphone page in headless Chromium calling a
// trunk with no credentials gets 407 and the trunk receives nothing; with
// the user's password (page parameters) it answers the 407 and the call's
// audio comes back.
func TestBrowserCallAuth(t *testing.T) {
	if !browsertest.InNetns(t) {
		return
	}
	tones := []float64{400, 1000}
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
	u := newTrunkUAS(t)
	r := startRelay(t, chain(withTrunk(u, mediaplan.ModeAuto, "PCMU"), withUsers("alice", "wonderland"), authRequired))
	page := "http://" + r.HTTPAddr().String() + "/"

	res, err := browser.Call(ctx, browsertest.Options{PageURL: page, Target: "sip:+15551234567@127.0.0.1", Hold: time.Second})
	if err == nil || res.Code != 407 {
		t.Fatalf("call without credentials: code %d, err %v, want 407 (log: %v)", res.Code, err, res.Log)
	}
	if n := u.trunkInvites(); n != 0 {
		t.Fatalf("the trunk received %d INVITEs from an unauthenticated browser", n)
	}

	res, err = browser.Call(ctx, browsertest.Options{PageURL: page + "?user=alice&password=wonderland",
		Target: "sip:+15551234567@127.0.0.1", Hold: 3 * time.Second, Freqs: tones})
	if err != nil {
		t.Fatalf("call with credentials: %v (log: %v)", err, res.Log)
	}
	for _, f := range tones {
		if db := res.ToneDB[f]; db < 20 {
			t.Errorf("%v Hz came back at %.1f dB: not detected", f, db)
		}
	}
	if n := u.trunkInvites(); n != 1 {
		t.Fatalf("the trunk received %d INVITEs, want 1", n)
	}
}
