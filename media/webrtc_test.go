package media

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// browserPC is a pion PeerConnection standing in for a browser on
// loopback that only receives audio.
func browserPC(t testing.TB) *webrtc.PeerConnection {
	t.Helper()
	pc := newBrowserPC(t, webrtc.NetworkTypeUDP4)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio,
		webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	return pc
}

// newBrowserPC is a pion PeerConnection offering Opus and PCMU whose ICE
// uses only network on loopback (TCP4: active ICE-TCP candidates, as a
// browser on a network that blocks UDP).
func newBrowserPC(t testing.TB, network webrtc.NetworkType) *webrtc.PeerConnection {
	t.Helper()
	var m webrtc.MediaEngine
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: 0},
	} {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
	}
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	s.SetNetworkTypes([]webrtc.NetworkType{network})
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(&m), webrtc.WithSettingEngine(s),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{})).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// sendingTrack adds a PCMU track to pc and returns it with the payloads
// pc receives.
func sendingTrack(t testing.TB, pc *webrtc.PeerConnection) (*webrtc.TrackLocalStaticRTP, <-chan []byte) {
	t.Helper()
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 512)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			got <- append([]byte(nil), p.Payload...)
		}
	})
	return track, got
}

func offerOf(t testing.TB, pc *webrtc.PeerConnection) string {
	t.Helper()
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-g
	return pc.LocalDescription().SDP
}

// TestWebRTCSharedPortAndPublicIP checks that every leg answers with the one
// shared UDP port and advertises the configured public address. The answers
// are never applied, so nothing is sent to that address.
func TestWebRTCSharedPortAndPublicIP(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", PublicIPs: []netip.Addr{netip.MustParseAddr("203.0.113.7")}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, port, _ := net.SplitHostPort(w.LocalAddr().String())
	for i := 0; i < 2; i++ {
		leg, answer, err := w.Answer(offerOf(t, browserPC(t)), "PCMU")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(answer, "203.0.113.7 "+port+" typ host") {
			t.Fatalf("answer does not advertise 203.0.113.7:%s:\n%s", port, answer)
		}
		if strings.Contains(answer, "127.0.0.1") {
			t.Fatalf("answer leaks the bind address:\n%s", answer)
		}
		if !strings.Contains(answer, "a=ice-lite") || !strings.Contains(answer, "a=fingerprint:") {
			t.Fatalf("answer is not ICE-lite DTLS:\n%s", answer)
		}
		if len(leg.Audio.Codecs) == 0 || !leg.Audio.Codecs[0].Is("PCMU") {
			t.Fatalf("negotiated %+v", leg.Audio.Codecs)
		}
		leg.Close()
	}
}

func TestWebRTCAnswerRejectsBadInput(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, _, err := w.Answer("v=0\r\ngarbage", "PCMU"); err == nil {
		t.Fatal("garbage offer accepted")
	}
	if _, _, err := w.Answer(offerOf(t, browserPC(t)), "PCMA"); err == nil {
		t.Fatal("answered with a codec the browser did not offer")
	}
}

// connectedLeg answers a loopback pion client and waits for DTLS.
func connectedLeg(b testing.TB, w *WebRTC) (*WebRTCLeg, *webrtc.PeerConnection) {
	pc := browserPC(b)
	return connect(b, w, pc), pc
}

// connect answers pc's offer on w and waits until both sides are
// connected.
func connect(b testing.TB, w *WebRTC, pc *webrtc.PeerConnection) *WebRTCLeg {
	b.Helper()
	leg, answer, err := w.Answer(offerOf(b, pc), "PCMU")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { leg.Close() })
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leg.WaitConnected(ctx); err != nil {
		b.Fatal(err)
	}
	waitPCConnected(b, pc)
	return leg
}

// waitPCConnected waits until the browser side has finished DTLS too: our
// leg, the DTLS server, is done one flight before the client, and what the
// client writes before then is dropped by pion.
func waitPCConnected(t testing.TB, pc *webrtc.PeerConnection) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); pc.ConnectionState() != webrtc.PeerConnectionStateConnected; {
		if time.Now().After(deadline) {
			t.Fatalf("browser side never connected: %s", pc.ConnectionState())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkWebRTCLegWrite measures sending one G.711 packet to the browser:
// header build, SRTP encryption and the UDP write.
func BenchmarkWebRTCLegWrite(b *testing.B) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	leg, pc := connectedLeg(b, w)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
		}
	})
	pkt := make([]byte, 12+160)
	pkt[0], pkt[1] = 0x80, 0
	// Wait until pion has bound the track (after DTLS) so writes are real.
	deadline := time.Now().Add(5 * time.Second)
	for leg.Stats().PacketsOut == 0 && time.Now().Before(deadline) {
		_ = leg.WriteRTP(pkt)
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		if err := leg.WriteRTP(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWebRTCLegFailCause: a browser that never sends a connectivity check
// fails its leg as an ICE timeout, and says so.
func TestWebRTCLegFailCause(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", ConnectTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	leg, _, err := w.Answer(offerOf(t, browserPC(t)), "PCMU") // the browser never gets the answer
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	if c := leg.FailCause(); c != "" {
		t.Errorf("FailCause before failing = %q", c)
	}
	select {
	case <-leg.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("the leg did not fail")
	}
	if c := leg.FailCause(); c != FailICETimeout {
		t.Errorf("FailCause = %q, want %q", c, FailICETimeout)
	}
}
