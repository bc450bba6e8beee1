package media

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/dtls/v3/pkg/crypto/selfsign"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// FuzzE2EInput feeds arbitrary datagrams to both input paths of an
// end-to-end call: the shared WebRTC port with an end-to-end leg behind a
// verified source, and an end-to-end RTP leg's accept. Whatever a leg
// passes on must be the datagram unchanged, and nothing from a source
// that is neither verified nor latched may pass.
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
	})
}
