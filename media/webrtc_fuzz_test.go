package media

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"github.com/pion/stun/v4"
)

// FuzzWebRTCPort feeds arbitrary datagrams to the shared WebRTC port's
// input path (shard.handle: the RFC 7983 demultiplexer, the ICE-lite STUN
// responder with its integrity checks, DTLS records to a leg's handshake,
// SRTP and SRTCP decryption and the receive statistics), from a source
// that passed an ICE check and from one that did not. Replies go to
// loopback only.
func FuzzWebRTCPort(f *testing.F) {
	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = w.Close() })
	leg, _, err := w.Answer(offerOf(f, browserPC(f)), "PCMU")
	if err != nil {
		f.Fatal(err)
	}
	key := make([]byte, 30)
	sess, err := newSRTPSession(&SRTPConfig{Profile: srtp.ProtectionProfileAes128CmHmacSha1_80, LocalKey: key, RemoteKey: key})
	if err != nil {
		f.Fatal(err)
	}
	leg.srtp.Store(sess)
	s := w.shards[0]
	verified := netip.MustParseAddrPort("127.0.0.1:9") // discard: nothing listens
	stranger := netip.MustParseAddrPort("127.0.0.1:7")
	s.mu.Lock()
	s.addrs[verified] = leg
	s.mu.Unlock()

	// Seeds: a check signed with the leg's password and one forged, a
	// DTLS record, SRTP and SRTCP under the leg's key, plain RTP.
	good := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(leg.ufrag+":remote"),
		stun.NewShortTermIntegrity(leg.pwd), stun.Fingerprint)
	forged := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(leg.ufrag+":remote"),
		stun.NewShortTermIntegrity("wrong"), stun.Fingerprint)
	f.Add(good.Raw, true)
	f.Add(forged.Raw, false)
	f.Add([]byte{22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, true)
	plain := mkRTP(f, 0, 1, 160, 42, false, make([]byte, 160))
	f.Add(plain, true)
	enc, err := sess.encRTP.EncryptRTP(nil, plain, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc, true)
	rr, _ := (&rtcp.ReceiverReport{SSRC: 7, Reports: []rtcp.ReceptionReport{{SSRC: 1}}}).Marshal()
	if encRR, err := sess.encryptRTCP(rr); err == nil {
		f.Add(encRR, true)
	}
	f.Add([]byte{}, false)

	f.Fuzz(func(t *testing.T, data []byte, fromVerified bool) {
		from := stranger
		if fromVerified {
			from = verified
		}
		s.mu.Lock()
		s.handle(append([]byte(nil), data...), from, false, time.Now())
		s.handle(append([]byte(nil), data...), from, true, time.Now())
		s.mu.Unlock()
		_ = leg.Stats()
	})
}
