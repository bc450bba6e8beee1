package media

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// TestWebRTCLegICETCP: a browser that can only use TCP reaches the leg
// through the passive ICE-TCP candidate, and media flows both ways, byte
// for byte, over the connection.
func TestWebRTCLegICETCP(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pc := newBrowserPC(t, webrtc.NetworkTypeTCP4)
	track, got := sendingTrack(t, pc)
	leg, answer, err := w.Answer(offerOf(t, pc), "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	tcpPort := w.TCPAddr().(*net.TCPAddr).Port
	if !strings.Contains(answer, " tcp ") || !strings.Contains(answer, "tcptype passive") {
		t.Fatalf("answer offers no passive TCP candidate:\n%s", answer)
	}
	if want := " 127.0.0.1 " + strconv.Itoa(tcpPort) + " typ host tcptype passive"; !strings.Contains(answer, want) {
		t.Fatalf("answer lacks %q:\n%s", want, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	if err := leg.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitPCConnected(t, pc)
	if tr := leg.Transport(); tr != "tcp4" {
		t.Fatalf("leg's selected pair is %q, want tcp4", tr)
	}
	mediaBothWays(t, leg, track, got, 50)

	// The leg ends: its connection is closed by the janitor's sweep.
	leg.Close()
	pollUntil(t, "ice-tcp connection closed after the leg", func() bool {
		w.tcp.mu.Lock()
		defer w.tcp.mu.Unlock()
		return len(w.tcp.conns) == 0
	})
}

// TestICETCPHostile: connections that never verify an ICE check are
// closed, a check with a wrong password gets no answer, an oversized
// frame ends the connection, and per-source caps hold.
func TestICETCPHostile(t *testing.T) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP, TCPMaxPerSource: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	leg, _, err := w.Answer(offerOf(t, browserPC(t)), "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	defer leg.Close()
	addr := w.TCPAddr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	frame := func(b []byte) []byte {
		return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	closedByRelay := func(c net.Conn, within time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(within))
		got, err := io.ReadAll(c)
		if len(got) > 0 {
			t.Errorf("the relay answered %d bytes", len(got))
		}
		return err == nil // EOF: the relay closed it; a timeout is an error
	}

	t.Run("forged check", func(t *testing.T) {
		c := dial()
		forged := stun.MustBuild(stun.TransactionID, stun.BindingRequest,
			stun.NewUsername(leg.ufrag+":evil"), stun.NewShortTermIntegrity("not-the-password-at-all"), stun.Fingerprint)
		rtpish := make([]byte, 172)
		rtpish[0] = 0x80
		for _, b := range [][]byte{forged.Raw, rtpish, {22, 254, 253, 0, 0}} {
			if _, err := c.Write(frame(b)); err != nil {
				t.Fatal(err)
			}
		}
		// No answer, and the connection is closed once the check window passes.
		if !closedByRelay(c, tcpCheckTimeout+5*time.Second) {
			t.Fatal("an unverified connection stayed open past the check timeout")
		}
		if s := leg.Stats(); s.PacketsIn != 0 {
			t.Fatalf("forged traffic counted as the leg's: %+v", s)
		}
	})
	t.Run("oversized frame", func(t *testing.T) {
		c := dial()
		if _, err := c.Write([]byte{0xff, 0xff, 1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		if !closedByRelay(c, 3*time.Second) {
			t.Fatal("a 65535-byte frame header did not end the connection")
		}
	})
	t.Run("per-source cap", func(t *testing.T) {
		var conns []net.Conn
		for range 4 {
			conns = append(conns, dial())
		}
		extra := dial()
		if !closedByRelay(extra, 3*time.Second) {
			t.Fatal("a fifth connection from one source was kept")
		}
		for _, c := range conns {
			_ = c.Close()
		}
	})
}

// FuzzICETCP feeds arbitrary byte streams to an ICE-TCP connection's
// reader: the RFC 4571 deframer, then the same demultiplexer, ICE
// responder, DTLS and SRTP paths as the UDP port, before and after the
// connection is bound to a leg. Replies go to a loopback peer.
func FuzzICETCP(f *testing.F) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1", TCPPort: TCPSameAsUDP})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = w.Close() })
	leg, _, err := w.Answer(offerOf(f, browserPC(f)), "PCMU")
	if err != nil {
		f.Fatal(err)
	}
	peer, err := net.Dial("tcp", w.TCPAddr().String())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = peer.Close() })
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	var pair *tcpPair
	pollUntil(f, "the relay accepted the connection", func() bool {
		w.tcp.mu.Lock()
		defer w.tcp.mu.Unlock()
		for p := range w.tcp.conns {
			pair = p
		}
		return pair != nil
	})
	frame := func(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...) }
	good := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(leg.ufrag+":remote"),
		stun.NewShortTermIntegrity(leg.pwd), stun.Fingerprint)
	f.Add(frame(good.Raw), false)
	f.Add(append(frame(good.Raw), frame([]byte{22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1})...), true)
	f.Add(frame(mkRTP(f, 0, 1, 160, 42, false, make([]byte, 160))), true)
	f.Add([]byte{0, 0}, false)
	f.Add([]byte{0xff, 0xff, 1}, false)
	f.Fuzz(func(t *testing.T, stream []byte, bound bool) {
		if bound {
			pair.leg.Store(leg)
		} else {
			pair.leg.Store(nil)
		}
		pair.readFrames(bytes.NewReader(stream))
		_ = leg.Stats()
	})
}
