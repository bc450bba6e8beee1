package media

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/stun/v4"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// FuzzE2EInput feeds arbitrary datagrams to both input paths of an
// end-to-end call: the shared WebRTC port with an end-to-end leg behind a
// verified source, and an end-to-end RTP leg's accept. Whatever a leg
// passes on must be the datagram unchanged, nothing from a source that is
// neither verified nor latched may pass, and no connectivity check without
// the leg's ICE password may verify.
func FuzzE2EInput(f *testing.F) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = w.Close() })
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		f.Fatal(err)
	}
	fp, _ := Fingerprint(cert, "sha-256")
	leg, _, err := w.AnswerE2E(offerOf(f, browserPC(f)), []sdp.Codec{{Name: "PCMU", PT: 0, Clock: 8000, Channels: 1}},
		E2EPeer{Fingerprint: fp, Setup: sdp.SetupActive})
	if err != nil {
		f.Fatal(err)
	}
	var passed [][]byte
	leg.sink.Store(&sinkRef{func(p []byte) { passed = append(passed, bytes.Clone(p)) }})
	s := w.shards[0]
	verified := netip.MustParseAddrPort("127.0.0.1:9") // discard: nothing listens
	stranger := netip.MustParseAddrPort("127.0.0.1:7")
	s.mu.Lock()
	s.addrs[verified] = leg
	s.mu.Unlock()

	f.Add([]byte{22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, true)
	f.Add(mkRTP(f, 0, 1, 160, 42, false, make([]byte, 170)), true)
	f.Add([]byte{0x80, 200, 0, 6, 1, 2, 3, 4, 5, 6, 7, 8}, false)
	f.Add([]byte{0x90, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 9}, true)
	f.Add([]byte{}, false)
	// Connectivity checks to an e2e RTP leg with ICE: one forged, one
	// from another session's ufrag (the leg's password is the fuzzer's
	// secret, so it cannot make one that verifies).
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("legufrag:far"),
		stun.NewShortTermIntegrity("wrong"), stun.Fingerprint).Raw, true)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("other:far"), stun.Fingerprint).Raw, false)

	f.Fuzz(func(t *testing.T, data []byte, fromVerified bool) {
		from := stranger
		if fromVerified {
			from = verified
		}
		passed = passed[:0]
		s.mu.Lock()
		s.handle(append([]byte(nil), data...), from, false, time.Now())
		s.mu.Unlock()
		if len(passed) > 1 || (len(passed) == 1 && (!fromVerified || !bytes.Equal(passed[0], data))) {
			t.Fatalf("webrtc leg passed %x for %x from verified=%v", passed, data, fromVerified)
		}
		_ = leg.Stats()

		l := fuzzLeg(false, nil)
		l.SetE2E()
		l.ice = &legICE{ufrag: "legufrag", pwd: "a password the fuzzer does not know"}
		src := netip.MustParseAddrPort("192.0.2.1:4000")
		l.SetRemote(src, netip.AddrPort{})
		if from == stranger {
			src = netip.MustParseAddrPort("192.0.2.9:4000")
		}
		for range 2 {
			if n, ok := l.accept(append([]byte(nil), data...), src); ok && (n != len(data) || from == stranger) {
				t.Fatalf("rtp leg accepted %d of %d bytes from %s", n, len(data), src)
			}
		}
		_ = l.Stats()
		if _, ok := l.ICEVerified(); ok {
			t.Fatalf("a check without the leg's password verified: %x", data)
		}
	})
}
