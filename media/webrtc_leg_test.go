package media

import (
	"bytes"
	"github.com/pion/rtcp"
	"net"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// TestWebRTCLegMediaBothWaysUnderSpray connects a pion client to a leg
// and checks that its RTP arrives byte for byte and ours reaches it, while
// another socket sprays the shared port with RTP, DTLS and STUN checks
// signed with the wrong password: none of that reaches the call, and the
// forged checks get no answer.
func TestWebRTCLegMediaBothWaysUnderSpray(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pc := newBrowserPC(t, webrtc.NetworkTypeUDP4)
	track, got := sendingTrack(t, pc)
	leg, answer, err := w.Answer(offerOf(t, pc), "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}

	spray, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer spray.Close()
	port := w.LocalAddr().(*net.UDPAddr)
	forged := stun.MustBuild(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(leg.ufrag+":evil"), stun.NewShortTermIntegrity("not-the-password-at-all"), stun.Fingerprint)
	stopSpray := make(chan struct{})
	sprayDone := make(chan struct{})
	go func() {
		defer close(sprayDone)
		fake := make([]byte, 12+160)
		fake[0], fake[1] = 0x80, 0
		for i := 0; ; i++ {
			select {
			case <-stopSpray:
				return
			case <-time.After(2 * time.Millisecond):
			}
			fake[3] = byte(i)
			_, _ = spray.WriteToUDP(fake, port)
			_, _ = spray.WriteToUDP([]byte{22, 254, 253, 0, 0}, port)
			_, _ = spray.WriteToUDP(forged.Raw, port)
		}
	}()

	if err := leg.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitPCConnected(t, pc)
	const n = 50
	mediaBothWays(t, leg, track, got, n)
	close(stopSpray)
	<-sprayDone
	if s := leg.Stats(); s.PacketsIn != n {
		t.Errorf("leg counted %d packets in, want %d (spray must not count)", s.PacketsIn, n)
	}
	_ = spray.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if k, _, err := spray.ReadFromUDP(make([]byte, 1500)); err == nil {
		t.Errorf("the sprayer got a %d-byte answer", k)
	}
}

// TestWebRTCLegClosedStopsServe: Serve returns once the leg closes, a
// closed leg refuses a new handler, and it refuses writes.
func TestWebRTCLegClosedStopsServe(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	leg, _ := connectedLeg(t, w)
	done := make(chan error, 1)
	go func() { done <- leg.Serve(func([]byte) {}) }()
	leg.Close()
	select {
	case err := <-done:
		if !isNetClosed(err) {
			t.Fatalf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	// Attached after the close, a handler is refused at once.
	if err := leg.Serve(func([]byte) { t.Error("handler called on a closed leg") }); !isNetClosed(err) {
		t.Fatalf("Serve on a closed leg returned %v", err)
	}
	pkt := make([]byte, 12+160)
	pkt[0] = 0x80
	if err := leg.WriteRTP(pkt); err == nil {
		t.Fatal("write to a closed leg succeeded")
	}
}

// mediaBothWays sends n numbered packets from the browser's track to the
// connected leg and n from the leg to the browser (got carries the
// payloads the browser receives), and checks that each arrived intact.
func mediaBothWays(t *testing.T, leg *WebRTCLeg, track *webrtc.TrackLocalStaticRTP, got <-chan []byte, n int) {
	t.Helper()
	// Read before writing: the leg keeps nothing for a reader that is not there yet.
	fromBrowser := make(chan []byte, n)
	go func() {
		buf := make([]byte, 1500)
		for {
			k, err := leg.ReadRTP(buf)
			if err != nil {
				close(fromBrowser)
				return
			}
			fromBrowser <- append([]byte(nil), buf[:k]...)
		}
	}()
	for leg.sink.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	// Browser to relay: payloads numbered so that each can be checked.
	for i := range n {
		payload := bytes.Repeat([]byte{byte(i)}, 160)
		if err := track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		var p []byte
		select {
		case p = <-fromBrowser:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d packets from the browser arrived", i, n)
		}
		want := bytes.Repeat([]byte{byte(i)}, 160)
		if !bytes.Equal(p[12:], want) {
			t.Fatalf("packet %d from the browser: payload %x..., want %x...", i, p[12:16], want[:4])
		}
	}
	// Relay to browser.
	pkt := make([]byte, 12+160)
	pkt[0], pkt[1] = 0x80, 0
	for i := range n {
		pkt[3] = byte(i)
		copy(pkt[12:], bytes.Repeat([]byte{0x40 + byte(i)}, 160))
		if err := leg.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		select {
		case p := <-got:
			if want := bytes.Repeat([]byte{0x40 + byte(i)}, 160); !bytes.Equal(p, want) {
				t.Fatalf("packet %d to the browser: payload %x..., want %x...", i, p[:4], want[:4])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d packets reached the browser", i, n)
		}
	}
}

// TestWebRTCLegReadsBrowserRTCP: the browser's receiver report about our
// stream, SRTCP multiplexed with its media, reaches the leg's statistics,
// and its media keeps flowing around it.
func TestWebRTCLegReadsBrowserRTCP(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	leg, pc := connectedLeg(t, w)
	rr := []rtcp.Packet{&rtcp.ReceiverReport{SSRC: 0x5150, Reports: []rtcp.ReceptionReport{{
		SSRC: leg.rtcpState.ssrc, FractionLost: 64, TotalLost: 7, Jitter: 80,
	}}}}
	pollUntil(t, "the browser's report in the leg's statistics", func() bool {
		if err := pc.WriteRTCP(rr); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		return leg.Stats().RemoteLost == 7
	})
	s := leg.Stats()
	if s.RemoteFractionLost != 0.25 || s.RemoteJitter != 10 {
		t.Errorf("remote fraction lost %v, jitter %v ms; want 0.25, 10 ms (80 at 8 kHz)", s.RemoteFractionLost, s.RemoteJitter)
	}
}
