package sipsrtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/pion/dtls/v3/pkg/crypto/selfsign"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// ErrDTLS is wrapped by every DTLS-SRTP set-up failure.
var ErrDTLS = errors.New("dtls-srtp")

// The relay's DTLS certificate for SIP legs: self-signed, made once per
// process; its fingerprint in the SDP is what the peer checks.
var (
	dtlsCertOnce sync.Once
	dtlsCert     tls.Certificate
	dtlsCertErr  error
)

func relayDTLSCert() (tls.Certificate, error) {
	dtlsCertOnce.Do(func() { dtlsCert, dtlsCertErr = selfsign.GenerateSelfSigned() })
	return dtlsCert, dtlsCertErr
}

// dtlsOffer offers UDP/TLS/RTP/SAVP with our fingerprint and setup:actpass
// (RFC 5763): the trunk picks the DTLS role.
func (n *Negotiation) dtlsOffer(o *sdp.Offer) error {
	cert, err := relayDTLSCert()
	if err != nil {
		return fmt.Errorf("%w: certificate: %w", ErrDTLS, err)
	}
	fp, err := media.Fingerprint(cert, "sha-256")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDTLS, err)
	}
	n.cert = &cert
	o.Proto = "UDP/TLS/RTP/SAVP"
	o.Extra = append(o.Extra, "fingerprint:"+fp, "setup:actpass")
	return nil
}

// dtlsAnswer runs the handshake with the trunk at the address of its answer
// and keys rtp. The trunk's certificate must match its a=fingerprint,
// checked before any media is read.
func (n *Negotiation) dtlsAnswer(ans sdp.Audio, rtp *media.RTPLeg) error {
	if n.cert == nil {
		return fmt.Errorf("%w: no offer", ErrDTLS)
	}
	var fpHash, fp, setup string
	for _, a := range ans.Attrs {
		switch a.Key {
		case "fingerprint":
			if h, v, err := sdp.ParseFingerprint(a.Value); err == nil && fp == "" {
				fpHash, fp = h, v
			}
		case "setup":
			setup = strings.ToLower(strings.TrimSpace(a.Value))
		}
	}
	if fp == "" {
		return fmt.Errorf("%w: the answer has no usable a=fingerprint", ErrDTLS)
	}
	if !strings.Contains(strings.ToUpper(ans.Proto), "TLS") {
		return fmt.Errorf("%w: the answer's protocol is %s", ErrDTLS, ans.Proto)
	}
	if !ans.Addr.IsValid() || ans.Port == 0 {
		return fmt.Errorf("%w: the answer has no media address", ErrDTLS)
	}
	// The answerer picks: active means it sends the ClientHello; passive
	// means we do. A missing a=setup defaults to active (RFC 4145).
	client := false
	switch setup {
	case "passive":
		client = true
	case "", "active":
	default:
		return fmt.Errorf("%w: a=setup:%s in an answer", ErrDTLS, setup)
	}
	remote := netip.AddrPortFrom(ans.Addr, uint16(ans.Port))
	cfg, err := rtp.DTLSKeys(context.Background(), media.DTLSOptions{
		Certificate: *n.cert, Client: client, Remote: remote,
		FingerprintHash: fpHash, Fingerprint: fp,
		Timeout: n.opts.DTLSTimeout,
	})
	if err != nil {
		n.failed(media.FailDTLS)
		return fmt.Errorf("%w: %w", ErrDTLS, err)
	}
	if err := rtp.StartSRTP(cfg); err != nil {
		n.failed(media.FailSRTPKeys)
		return fmt.Errorf("%w: %w", ErrDTLS, err)
	}
	n.keyed, n.suite = true, cfg.Profile.String()
	n.settle()
	n.opts.Log.Info("sip leg encrypted", "srtp", "dtls", "profile", cfg.Profile.String(), "dtls_role", map[bool]string{true: "client", false: "server"}[client])
	return nil
}

// failed reports a DTLS-SRTP failure's cause.
func (n *Negotiation) failed(cause string) {
	if n.opts.OnDTLSFailure != nil {
		n.opts.OnDTLSFailure(cause)
	}
}
