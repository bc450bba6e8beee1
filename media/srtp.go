package media

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// SDES crypto-suite names (RFC 4568, RFC 7714) the SIP leg supports.
const (
	SuiteAESCM128SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
	SuiteAESCM128SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
	SuiteAEADAES128GCM   = "AEAD_AES_128_GCM"
	SuiteAEADAES256GCM   = "AEAD_AES_256_GCM"
)

// SRTPProfile maps an SDES crypto-suite name to its pion/srtp profile.
func SRTPProfile(suite string) (srtp.ProtectionProfile, error) {
	switch suite {
	case SuiteAESCM128SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case SuiteAESCM128SHA1_32:
		return srtp.ProtectionProfileAes128CmHmacSha1_32, nil
	case SuiteAEADAES128GCM:
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	case SuiteAEADAES256GCM:
		return srtp.ProtectionProfileAeadAes256Gcm, nil
	}
	return 0, fmt.Errorf("unsupported SRTP crypto suite %q", suite)
}

// The highest packet indexes (RFC 3711 §3.3.1, §3.4): SRTP's is 48 bits,
// the rollover counter and the sequence number; SRTCP's 31. The replay
// window (replayWindowSize) is wide enough for the reordering a trunk
// produces, as RFC 3711 §3.3.2 allows (minimum 64).
const (
	maxSRTPIndex  = 1<<48 - 1
	maxSRTCPIndex = 1<<31 - 1
)

// SRTPConfig holds the SDES keys of an encrypted leg (RFC 4568). Keys are
// the decoded inline values, master key followed by master salt.
type SRTPConfig struct {
	Profile srtp.ProtectionProfile
	// LocalKey encrypts what we send: the key of our own a=crypto line.
	LocalKey []byte
	// LocalMKI, if set, is sent in every packet (our line's MKI value).
	LocalMKI []byte
	// RemoteKey decrypts what we receive: the key of the peer's a=crypto line.
	RemoteKey []byte
	// RemoteMKI, if the peer's line has an MKI, is what its packets carry.
	RemoteMKI []byte
}

// srtpSession holds the contexts so that no two goroutines share a pion
// context (they are not safe concurrently) without a lock on the packet
// path: the reading goroutine owns decRTP; writers share encRTP under wmu,
// and so does RTCP's rare encryption (one context less per session, each
// about 3 KB); decRTCP, read where RTP is not (an RTCP port's own
// reader), takes rtcpMu. A session made by newMuxedSRTPSession has no
// decRTCP of its own: its RTCP arrives with its RTP and is read under the
// lock the RTP reads take, so decRTCP is decRTP.
type srtpSession struct {
	decRTP *srtp.Context
	rhdr   rtp.Header // reused for decryption, reader-owned

	wmu    sync.Mutex
	encRTP *srtp.Context // RTP and RTCP
	whdr   rtp.Header
	wbuf   []byte

	rtcpMu  sync.Mutex
	decRTCP *srtp.Context
}

func splitKey(p srtp.ProtectionProfile, keySalt []byte) (key, salt []byte, err error) {
	kl, err := p.KeyLen()
	if err != nil {
		return nil, nil, err
	}
	sl, err := p.SaltLen()
	if err != nil {
		return nil, nil, err
	}
	if len(keySalt) != kl+sl {
		return nil, nil, fmt.Errorf("srtp %s: key||salt is %d bytes, want %d", p, len(keySalt), kl+sl)
	}
	return keySalt[:kl], keySalt[kl:], nil
}

func newSRTPSession(c *SRTPConfig) (*srtpSession, error) { return newSession(c, false) }

// newMuxedSRTPSession is newSRTPSession for a leg that decrypts its RTCP,
// multiplexed with its RTP, under the lock its RTP decryption takes (a
// WebRTC leg's rmu): RTCP uses the RTP context, one pion context less per
// call.
func newMuxedSRTPSession(c *SRTPConfig) (*srtpSession, error) { return newSession(c, true) }

func newSession(c *SRTPConfig, muxed bool) (*srtpSession, error) {
	lk, ls, err := splitKey(c.Profile, c.LocalKey)
	if err != nil {
		return nil, fmt.Errorf("local key: %w", err)
	}
	rk, rs, err := splitKey(c.Profile, c.RemoteKey)
	if err != nil {
		return nil, fmt.Errorf("remote key: %w", err)
	}
	remote := func() (*srtp.Context, error) {
		return srtp.CreateContext(rk, rs, c.Profile, srtp.MasterKeyIndicator(c.RemoteMKI),
			SRTPReplayProtection(), srtp.SRTCPReplayDetectorFactory(replayFactory(maxSRTCPIndex)))
	}
	s := &srtpSession{}
	if s.encRTP, err = srtp.CreateContext(lk, ls, c.Profile, srtp.MasterKeyIndicator(c.LocalMKI)); err != nil {
		return nil, fmt.Errorf("srtp context: %w", err)
	}
	if s.decRTP, err = remote(); err != nil {
		return nil, fmt.Errorf("srtp context: %w", err)
	}
	if muxed {
		s.decRTCP = s.decRTP
		return s, nil
	}
	if s.decRTCP, err = remote(); err != nil {
		return nil, fmt.Errorf("srtcp context: %w", err)
	}
	return s, nil
}

// srtpDropReason classifies a failed decryption. pion/srtp exports no
// sentinel for replays; its replay error unwraps to one whose text is fixed,
// and TestSRTPReplayDropped pins that down across upgrades.
func srtpDropReason(err error) string {
	if errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
		return DropSRTPAuth
	}
	if u := errors.Unwrap(err); u != nil && u.Error() == "duplicated packet" {
		return DropSRTPReplay
	}
	return DropSRTPAuth
}

// decryptRTP authenticates and decrypts pkt in place; the plaintext is a
// prefix of pkt.
func (s *srtpSession) decryptRTP(pkt []byte) ([]byte, string, bool) {
	out, err := s.decRTP.DecryptRTP(pkt, pkt, &s.rhdr)
	if err != nil {
		return nil, srtpDropReason(err), false
	}
	return out, "", true
}

// writeRTP encrypts b into the session's buffer and sends it; b is left
// untouched since the caller owns it.
func (l *RTPLeg) writeSRTP(b []byte, dst netip.AddrPort) error {
	s := l.srtp
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, wbuf, _ := scratchFor(b)
	if wbuf == nil {
		wbuf = s.sealBuf()
	}
	out, err := s.encRTP.EncryptRTP(wbuf, b, &s.whdr)
	if err != nil {
		return fmt.Errorf("rtp leg %s: srtp encrypt: %w", l.local, err)
	}
	if err := l.out.sendFor(b, out, dst); err != nil {
		return fmt.Errorf("rtp leg %s: write to %s: %w", l.local, dst, err)
	}
	return nil
}

// sealBuf is the session's buffer for an encrypted packet written off a
// loop, made on first use. Under wmu.
func (s *srtpSession) sealBuf() []byte {
	if s.wbuf == nil {
		s.wbuf = make([]byte, forwardBufSize+64)
	}
	return s.wbuf
}

func (s *srtpSession) encryptRTCP(b []byte) ([]byte, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.encRTP.EncryptRTCP(nil, b, nil)
}

func (s *srtpSession) decryptRTCP(b []byte) ([]byte, string, bool) {
	s.rtcpMu.Lock()
	defer s.rtcpMu.Unlock()
	out, err := s.decRTCP.DecryptRTCP(nil, b, nil)
	if err != nil {
		return nil, srtpDropReason(err), false
	}
	return out, "", true
}
