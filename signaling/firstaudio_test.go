package signaling

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// First audio: how soon a trunk's audio reaches a browser once the call is
// up, and how much of it arrives. On a call into a browser, Chromium
// answers a=setup:active and sends its ClientHello as soon as a
// connectivity check has succeeded, before it nominates the pair; a relay
// that starts DTLS only on the nomination drops those ClientHellos and
// the first second or so of the trunk's audio with them.
//
// The test asserts what a listener hears, the share of the trunk's audio
// that arrived, not how soon: a timing bound would fail on a loaded
// machine for reasons that are not the relay's. The delay from the ACK to
// the first packet is logged for whoever reads the run.
const (
	// firstAudioStream is how many packets the trunk sends from its ACK
	// (4 s at 50 packets/s), and firstAudioShare how many of them the
	// browser must receive: a relay that drops the first second (a
	// quarter of the stream) cannot. What a working relay loses is what
	// the trunk sent before the handshake finished and what is still in
	// flight at hang-up: 1–3 packets on a quiet machine, 12 seen on a
	// loaded one (DTLS done 100 ms after the ACK). 90 % leaves room for
	// that and still fails a lost second by a factor of 2.5.
	firstAudioStream = 200
	firstAudioShare  = 0.90
	// firstAudioCalls is how many calls each case places: whether a
	// browser's first ClientHello beats its nomination is a race, so one
	// call that happens to nominate first proves little.
	firstAudioCalls = 3
)

// TestFirstAudio places calls between headless Chromium and a sipgo trunk
// through the relay, with JsSIP and with SIP.js as the page's SIP stack,
// into the browser (the trunk calls alice, who answers) and out of it
// (the browser calls the trunk). The trunk sends a tone at 50 packets/s
// from the ACK. The browser must complete DTLS and receive firstAudioShare
// of what the trunk sent (getStats() packetsReceived at the end of the
// call). Each call logs how long after the ACK its first packet came
// (both marks taken in the page: the ACK it received or sent, and the
// first inbound packet in getStats()).
func TestFirstAudio(t *testing.T) {
	ensureJsSIP(t)
	if !browsertest.InNetns(t) {
		return
	}
	sipjsEsbuild, err := browsertest.Esbuild()
	if err != nil {
		t.Fatal(err)
	}
	bt, err := browsertest.Dir()
	if err != nil {
		t.Fatal(err)
	}
	pages := map[string]string{
		"JsSIP":  bundlePage(t, jssipEsbuild, jssipDir),
		"SIP.js": bundlePage(t, sipjsEsbuild, filepath.Join(bt, "sipjs")),
	}
	wav := filepath.Join(t.TempDir(), "mic.wav")
	if err := browsertest.WriteToneWAV(wav, []float64{700}, 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	browser, err := browsertest.Launch(ctx, wav)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()

	for _, stack := range []string{"JsSIP", "SIP.js"} {
		srv := httptest.NewServer(http.FileServer(http.Dir(pages[stack])))
		defer srv.Close()
		for _, into := range []bool{true, false} {
			name := stack + "/outgoing"
			if into {
				name = stack + "/incoming"
			}
			t.Run(name, func(t *testing.T) {
				for i := 1; i <= firstAudioCalls; i++ {
					res, sent := firstAudioCall(t, ctx, browser, srv.URL, into)
					checkFirstAudio(t, fmt.Sprintf("call %d of %d", i, firstAudioCalls), res, sent)
				}
			})
		}
	}
}

// firstAudioCall places one call between browser (a page served at
// pageRoot) and a fresh trunk through a fresh relay, into the browser or
// out of it, and returns the browser's result and how many packets the
// trunk sent.
func firstAudioCall(t *testing.T, ctx context.Context, browser *browsertest.Browser, pageRoot string, into bool) (browsertest.Result, int) {
	t.Helper()
	out := newTrunkUAS(t)
	out.echo, out.codecs, out.stream = false, []string{"PCMU"}, firstAudioStream
	r, in := inboundRelay(t, func(c *config.Config) {
		c.Trunks = append(c.Trunks, config.Trunk{Name: "out", Match: "^1", Address: "sip:" + out.addr, Codecs: []string{"PCMU"}})
		// SIP.js answers only the first challenge, and only MD5.
		c.SIP.DigestAlgorithms = []string{"MD5"}
		c.HTTP.AllowedOrigins = []string{pageRoot} // the page is served from elsewhere
	})
	page := fmt.Sprintf("%s/index.html?ws=ws://%s/ws", pageRoot, r.HTTPAddr())
	o := browsertest.Options{Hold: 6 * time.Second} // outlasts the trunk's 4 s stream
	if !into {
		o.PageURL, o.Target = page+"&user=alice&password=wonderland", "sip:15550001111@127.0.0.1"
		res, err := browser.Call(ctx, o)
		if err != nil {
			t.Fatalf("browser: %v (log: %v)", err, res.Log)
		}
		select {
		case sent := <-out.streamed:
			return res, sent
		case <-time.After(10 * time.Second):
			t.Fatal("the trunk did not finish its stream")
		}
	}
	o.PageURL, o.Answer, o.User, o.Password = page, true, "alice", "wonderland"
	done := answeringBrowser(t, ctx, browser, r, o)
	resp, err := in.invite(ctx, r, "alice")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("trunk's INVITE to alice: %v %v", resp, err)
	}
	sent := sendToneRTP(in.rtpConn, in.remote, 0, firstAudioStream)
	br := <-done
	if br.err != nil {
		t.Fatalf("browser: %v (log: %v)", br.err, br.res.Log)
	}
	return br.res, sent
}

// checkFirstAudio checks that a browser call received firstAudioShare of
// the sent packets, and logs its first-audio figures.
func checkFirstAudio(t *testing.T, call string, res browsertest.Result, sent int) {
	t.Helper()
	if !res.MediaConnected || res.Timing == nil || res.Timing.Connected == nil {
		t.Fatalf("%s: ICE/DTLS did not complete in the browser (log: %v)", call, res.Log)
	}
	received, _ := res.Stats["packetsReceived"].(float64)
	delay, ok := res.Timing.SinceACK(res.Timing.FirstRTP)
	connected, _ := res.Timing.SinceACK(res.Timing.Connected)
	share := received / float64(max(sent, 1))
	t.Logf("%s: first RTP at the browser %v after the ACK (ICE+DTLS connected at %+v); browser received %.0f of %d packets the trunk sent (%.1f%%)",
		call, delay.Round(time.Millisecond), connected.Round(time.Millisecond), received, sent, 100*share)
	if !ok {
		t.Errorf("%s: no first-RTP or ACK mark in the page (timing %+v)", call, res.Timing)
	}
	if sent < firstAudioStream {
		t.Errorf("%s: the trunk sent only %d of its %d packets", call, sent, firstAudioStream)
	}
	if share < firstAudioShare {
		t.Errorf("%s: the browser received %.0f of the %d packets the trunk sent (%.1f%%), want at least %.0f%%",
			call, received, sent, 100*share, 100*firstAudioShare)
	}
}
